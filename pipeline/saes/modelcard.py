"""The model card (the Hub repository's ``README.md``) of pushed SAE folders.

Built only from files: each variant's ``cfg.json`` (architecture, hook, k, width, training
tokens, and the identity of the model the activations came from: ``model_hub_id``,
``model_weights``, ``model_weights_sha256``) and, when given, an ``evaluate.json`` (DESIGN §3
Metrics: variant name → figures; a gradient-aware variant's ``<name>@beta0`` entry is shown
beside it). YAML front matter first (``library_name``, ``tags``, ``base_model`` where every
SAE names the same hub model), then what each SAE is, how it was evaluated, and how to load
it: a ``topk`` folder with plain SAELens, a ``gsae`` folder only with this project's SAELens
plug-in (:mod:`pipeline.saes.saelens_plugin`), every folder with ``gsae_pipeline.load_sae``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

DISTRIBUTION = "gsae-pipeline"
"""The project's distribution name on PyPI (pyproject.toml ``[project] name``)."""
SAELENS_NATIVE = ("topk",)
"""Architectures SAELens 6 loads from our folders by itself."""
SAELENS_PLUGIN = ("gsae",)
"""Architectures SAELens loads after ``import pipeline.saes.saelens_plugin`` (its ``ARCHITECTURE``)."""
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FIGURES = (
    ("fvu", "FVU", ".4f"),
    ("l0", "L0", ".1f"),
    ("dead_frac", "dead", ".3f"),
    ("loss_recovered", "loss recovered", ".4f"),
    ("ce_loss_score", "CE loss score (SAELens)", ".4f"),
    ("kl", "KL", ".4f"),
    ("kl_div_score", "KL div score (SAELens)", ".4f"),
    ("selection_shift", "selection shift", ".3f"),
)
"""evaluate.json keys shown in the card: (key, column heading, format)."""


@dataclass(frozen=True)
class CardVariant:
    """One pushed SAE folder as the card describes it."""

    name: str
    """The folder name inside the repository (the variant name)."""
    cfg: Mapping[str, Any]
    """Its ``cfg.json``."""

    def get(self, key: str) -> Any:
        """``cfg[key]``, else the same key of SAELens's ``metadata`` block, else None."""
        meta = self.cfg.get("metadata")
        value = self.cfg.get(key)
        if value is None and isinstance(meta, Mapping):
            value = meta.get(key)
        return value

    @property
    def hub_id(self) -> str | None:
        """The hub id of the model the SAE belongs to, when the store recorded one (``model_hub_id``;
        not ``model_name``, which falls back to ``model.name``, a local folder's path included)."""
        found = self.get("model_hub_id")
        return str(found) if isinstance(found, str) and _HUB_ID.match(found) else None

    @property
    def identity(self) -> tuple[str, str | None, str | None]:
        """(model, weights, sha256) the activations were harvested from, as recorded (None when not)."""
        model = self.hub_id or str(self.get("model") or "unknown")
        weights, sha = self.get("model_weights"), self.get("model_weights_sha256")
        return model, None if weights is None else str(weights), None if sha is None else str(sha)


def _cell(value: Any, fmt: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and fmt:
        return format(value, fmt)
    return str(value).replace("|", "\\|")


def front_matter(variants: Sequence[CardVariant]) -> str:
    """The card's YAML header: SAELens as the library, tags, and the base model if all agree."""
    tags = ["sparse-autoencoder", "saelens", DISTRIBUTION]
    if any(v.cfg.get("architecture") in SAELENS_PLUGIN for v in variants):
        tags.append("g-sae")
    data: dict[str, Any] = {"library_name": "saelens", "tags": tags}
    hub_ids = {v.hub_id for v in variants}
    if len(hub_ids) == 1 and None not in hub_ids:
        data["base_model"] = hub_ids.pop()
    return "---\n" + yaml.safe_dump(data, sort_keys=False) + "---\n"


def _variants_table(variants: Sequence[CardVariant]) -> list[str]:
    rows = [
        "| SAE (folder) | architecture | hook (ours / TransformerLens) | d_in | width (d_sae) | k | β | value mode | grad scale | training tokens |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        found = v.cfg.get("metadata")
        meta: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        hooks = " / ".join(
            str(h) for h in dict.fromkeys((v.cfg.get("hook_name"), meta.get("hook_name"))) if h
        )
        grad = v.cfg.get("architecture") in SAELENS_PLUGIN or float(v.cfg.get("beta") or 0) > 0
        rows.append(
            "| "
            + " | ".join(
                [
                    f"`{v.name}`",
                    _cell(v.cfg.get("architecture")),
                    _cell(hooks or None),
                    _cell(v.cfg.get("d_in")),
                    _cell(v.cfg.get("d_sae")),
                    _cell(v.cfg.get("k")),
                    _cell(v.cfg.get("beta") if grad else None),
                    _cell(v.cfg.get("value_mode") if grad else None),
                    _cell(v.cfg.get("grad_scale") if grad else None, ".6g"),
                    _cell(v.cfg.get("tokens_seen")),
                ]
            )
            + " |"
        )
    return rows


def _identity_section(variants: Sequence[CardVariant]) -> list[str]:
    groups: dict[tuple[str, str | None, str | None], list[str]] = {}
    for v in variants:
        groups.setdefault(v.identity, []).append(v.name)
    lines = ["## The model they were trained on", ""]
    for (model, weights, sha), names in groups.items():
        which = "all SAEs" if len(groups) == 1 else ", ".join(f"`{n}`" for n in names)
        what = f"weights {weights}" if weights else "weights not recorded (trained before they were)"
        digest = f" (sha256 `{sha}`)" if sha else ""
        lines += [f"- {which}: model `{model}`, {what}{digest}"]
    lines += [
        "",
        "The SAEs were fit on activations of exactly these weights. Loading the hub model's own "
        "weights next to them (e.g. `HookedTransformer.from_pretrained(model_name)` in SAELens) gives "
        "other activations and no warning: compare `cfg.metadata.model_weights` / "
        "`model_weights_sha256` with the weights you load.",
        "",
    ]
    return lines


def _evaluation_section(
    variants: Sequence[CardVariant], figures: Mapping[str, Any], source: str
) -> list[str]:
    rows = []
    for v in variants:
        for entry in (v.name, f"{v.name}@beta0"):
            row = figures.get(entry)
            if isinstance(row, Mapping):
                cells = " | ".join(_cell(row.get(key), fmt) for key, _, fmt in _FIGURES)
                rows.append(f"| `{entry}` | {cells} |")
    if not rows:  # figures of other SAEs only: no empty table
        return []
    heads = " | ".join(h for _, h, _ in _FIGURES)
    lines = [
        "## Evaluation",
        "",
        f"From `{source}` (held-out tokens never seen in training; a g-SAE is also evaluated without "
        "its gradient as `<name>@beta0`).",
        "",
        f"| entry | {heads} |",
        "|---" * (len(_FIGURES) + 1) + "|",
        *rows,
    ]
    lines += [
        "",
        "Loss recovered and KL are this project's convention: the first position of each context (BOS) "
        "keeps its clean activation in every edit, the zero ablation included. CE loss score and KL div "
        "score are SAELens's `evals.run_evals` with its defaults (every position zero-ablated, special "
        "tokens left out): compare those with published tables.",
        "",
    ]
    return lines


def _loading_section(repo_id: str, variants: Sequence[CardVariant], version: str) -> list[str]:
    archs = {str(v.cfg.get("architecture")) for v in variants}
    first = {a: next(v.name for v in variants if v.cfg.get("architecture") == a) for a in sorted(archs)}
    pin = f"=={version}" if version and version != "unknown" else ""
    lines = ["## Loading", ""]
    if archs & set(SAELENS_PLUGIN):
        name = next(first[a] for a in SAELENS_PLUGIN if a in first)
        lines += [
            "A g-SAE (architecture `gsae`) selects its latents with the gradient of the LM's next-token "
            "loss. **SAELens cannot load it on its own** (`KeyError: 'gsae'`), and it must never be run as a "
            "plain TopK SAE: install this project, whose SAELens plug-in registers the architecture:",
            "",
            "```bash",
            f'pip install "{DISTRIBUTION}[interop]{pin}"   # the plug-in, with SAELens',
            "```",
            "",
            "```python",
            "import pipeline.saes.saelens_plugin  # registers the gsae architecture in SAELens",
            "from sae_lens import SAE",
            "",
            f'sae = SAE.from_pretrained("{repo_id}", "{name}")',
            "acts = sae.encode(x, grad)  # raw activations and raw loss gradients [..., d_in]",
            "x_hat = sae.decode(acts)",
            "```",
            "",
            "`grad` is ∂L/∂x at the hooked activation, L the *summed* next-token cross-entropy of the "
            "context; the folder's `grad_scale` is applied inside. Without `grad` the g-SAE raises (unless β = 0).",
            "",
        ]
    if archs & set(SAELENS_NATIVE):
        name = next(first[a] for a in SAELENS_NATIVE if a in first)
        lines += [
            "TopK SAEs load with SAELens alone:",
            "",
            "```python",
            "from sae_lens import SAE",
            "",
            f'sae = SAE.from_pretrained("{repo_id}", "{name}")',
            "```",
            "",
        ]
    name = variants[0].name
    lines += [
        f"Every folder also loads with the project's own API (`pip install {DISTRIBUTION}{pin}`):",
        "",
        "```python",
        "from pathlib import Path",
        "",
        "import gsae_pipeline as gp",
        "from huggingface_hub import hf_hub_download",
        "",
        f'cfg = hf_hub_download("{repo_id}", "{name}/cfg.json")',
        f'hf_hub_download("{repo_id}", "{name}/sae_weights.safetensors")  # beside it',
        "sae = gp.load_sae(Path(cfg).parent)  # sae.encode(x, grad=None), sae.decode(acts), any [..., d]",
        "```",
        "",
    ]
    return lines


def model_card(
    repo_id: str,
    variants: Sequence[CardVariant],
    *,
    version: str,
    figures: Mapping[str, Any] | None = None,
    figures_source: str = "evaluate.json",
) -> str:
    """The repository's README.md: front matter, the SAEs, the model, evaluation, loading."""
    kinds = sorted({str(v.cfg.get("architecture")) for v in variants})
    lines = [
        front_matter(variants),
        f"# Sparse autoencoders: {', '.join(kinds)}",
        "",
        f"{len(variants)} sparse autoencoder(s) trained with [{DISTRIBUTION}](https://pypi.org/project/{DISTRIBUTION}/) "
        f"{version}, one folder each (`cfg.json` + `sae_weights.safetensors`, SAELens 6's layout, acting on raw "
        'activations). A TopK SAE keeps the k largest pre-activations; a g-SAE ("Features that Make a '
        "Difference\") ranks them by z + β·z·|W_dec g|, with g the gradient of the LM's loss at the activation.",
        "",
        *_variants_table(variants),
        "",
        *_identity_section(variants),
    ]
    if figures:
        lines += _evaluation_section(variants, figures, figures_source)
    lines += _loading_section(repo_id, variants, version)
    return "\n".join(lines).rstrip() + "\n"
