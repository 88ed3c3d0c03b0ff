"""``gsae push``: trained SAE folders and their model card to a Hugging Face Hub model repository.

The repository gets one folder per variant, ``<variant>/cfg.json`` and
``<variant>/sae_weights.safetensors`` (byte copies of ``train.out_dir/<variant>/``: SAELens's
upload layout, so ``sae_lens.SAE.from_pretrained(repo_id, variant)`` finds them), and a
``README.md`` (:mod:`pipeline.saes.modelcard`) at the top, all in one commit. The card describes
every SAE folder on the branch after the commit: those pushed, and those an earlier push left
there (their ``cfg.json`` read back from the Hub). :func:`publish` is the command:
:func:`plan_upload` gathers the local side, :meth:`UploadPlan.files` lays out the commit,
:func:`write_plan` writes it to a folder
(``--dry-run``: the card of the pushed folders alone, nothing is asked of the Hub) and
:func:`push` commits it with ``huggingface_hub`` (``create_repo`` with ``exist_ok``, the branch
created from the default one when ``revision`` names a new one, the branch's other SAE folders
listed, then ``create_commit``). The token is huggingface_hub's: ``$HF_TOKEN`` or the one
``hf auth login`` saved. Every failure is a :class:`~pipeline.core.errors.PublishError` with one
line that says what to do.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import PublishError
from pipeline.saes.io import CONFIG, LEGACY_WEIGHTS, WEIGHTS, find_variants, read_cfg, weights_file
from pipeline.saes.modelcard import CardVariant, model_card

logger = logging.getLogger(__name__)

CARD = "README.md"
DEFAULT_MESSAGE = "Upload {n} SAE(s) with gsae push"
"""The commit message when none is given (``{n}``: the number of SAE folders)."""


@dataclass(frozen=True)
class PushTarget:
    """Where ``gsae push`` commits, and how."""

    repo_id: str
    """The model repository, ``owner/name`` (or ``name``: the token's own namespace)."""
    revision: str | None = None
    """Branch to commit to; None is the repository's default branch. A missing branch is created from it."""
    private: bool = False
    """Create the repository private (a repository that already exists keeps its visibility)."""
    commit_message: str | None = None
    """The commit's summary line; None gives :data:`DEFAULT_MESSAGE`."""
    endpoint: str | None = None
    """The Hub's URL; None is huggingface_hub's (``$HF_ENDPOINT`` or https://huggingface.co)."""
    token: str | None = field(default=None, repr=False)
    """An access token; None takes huggingface_hub's (``$HF_TOKEN``, else ``hf auth login``'s)."""

    def __post_init__(self) -> None:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(self.repo_id)
        except HFValidationError as exc:
            raise PublishError(f"{self.repo_id!r} is not a Hub repository id (owner/name)") from exc
        if self.revision is not None and not self.revision.strip():
            raise PublishError("--revision must name a branch")
        if self.commit_message is not None and not self.commit_message.strip():
            raise PublishError("--commit-message must not be empty")


def select_variants(out_dir: str | Path, names: Sequence[str] = ()) -> list[Path]:
    """The variant folders of ``out_dir`` to push: all of them, or those named (in that order)."""
    found = {p.name: p for p in find_variants(out_dir)}
    unknown = [n for n in names if n not in found]
    if unknown:
        raise PublishError(
            f"no trained variant {unknown[0]!r} in {out_dir} (there: {', '.join(sorted(found))})"
        )
    chosen = [found[n] for n in dict.fromkeys(names)] if names else list(found.values())
    for folder in chosen:
        w = weights_file(folder)
        if w is not None and w.name == LEGACY_WEIGHTS:
            raise PublishError(
                f"{folder}: written before the SAELens layout ({LEGACY_WEIGHTS}), which SAELens cannot "
                f"load: retrain it with gsae train to push it"
            )
    return chosen


def read_figures(path: str | Path) -> dict[str, Any]:
    """An ``evaluate.json`` (variant name → figures) for the model card."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise PublishError(f"no evaluation file {p}: run gsae evaluate, or leave --evaluate out") from exc
    except json.JSONDecodeError as exc:
        raise PublishError(f"{p}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise PublishError(f"{p}: not a JSON object of variant name → figures")
    return data


@dataclass(frozen=True)
class UploadPlan:
    """The local side of one push: the SAE folders, their cfg.json and the card's inputs."""

    target: PushTarget
    """Where it goes (the repository id also appears in the card's loading snippets)."""
    variants: tuple[CardVariant, ...]
    """The pushed folders' names and ``cfg.json``, in push order."""
    folders: tuple[Path, ...]
    """The local variant folders, in the same order."""
    version: str
    """This project's version, pinned in the card's install line."""
    figures: Mapping[str, Any] | None = None
    """An ``evaluate.json``'s entries for the card, if given."""
    figures_source: str = "evaluate.json"
    """How the card names that file."""

    def files(self, also: Sequence[CardVariant] = ()) -> dict[str, Path | bytes]:
        """Path in the repository → local file (or the card's bytes): everything one push commits.
        ``also``: SAE folders already on the branch, described by the card too."""
        files: dict[str, Path | bytes] = {}
        for folder in self.folders:
            files[f"{folder.name}/{CONFIG}"] = folder / CONFIG
            files[f"{folder.name}/{WEIGHTS}"] = folder / WEIGHTS
        card = model_card(
            self.target.repo_id,
            [*self.variants, *also],
            version=self.version,
            figures=self.figures,
            figures_source=self.figures_source,
        )
        files[CARD] = card.encode("utf-8")
        return files


def plan_upload(
    target: PushTarget,
    folders: Sequence[Path],
    *,
    version: str,
    figures: Mapping[str, Any] | None = None,
    figures_source: str = "evaluate.json",
) -> UploadPlan:
    """The plan of pushing ``folders`` (each ``cfg.json`` read and checked) to ``target``."""
    if not folders:
        raise PublishError("nothing to push: no SAE folder selected")
    variants = tuple(CardVariant(folder.name, read_cfg(folder)) for folder in folders)
    if figures is not None:
        missing = [v.name for v in variants if v.name not in figures]
        if missing:
            logger.warning("%s has no figures for %s", figures_source, ", ".join(missing))
    return UploadPlan(target, variants, tuple(folders), version, figures, figures_source)


def write_plan(plan: UploadPlan, dest: str | Path) -> Path:
    """Write the planned commit to ``dest`` (the ``--dry-run`` folder); refuse a non-empty one."""
    files = plan.files()
    root = Path(dest)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise PublishError(f"{root} exists and is not an empty folder: give --dry-run a new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    # written beside it, then renamed: an interrupted dry run leaves no folder that looks complete
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".{root.name}.") as tmp:
        for path_in_repo, source in files.items():
            out = Path(tmp) / path_in_repo
            out.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                out.write_bytes(source)
            else:
                shutil.copyfile(source, out)
        if root.exists():
            root.rmdir()
        Path(tmp).rename(root)
        Path(tmp).mkdir()  # for TemporaryDirectory's cleanup
    return root


def _http_failure(exc: Exception, step: str) -> PublishError:
    """One line for a refused request: the step, the status and the Hub's own message."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    message = (getattr(exc, "server_message", None) or "").strip().splitlines()
    detail = f": {message[0]}" if message else ""
    hint = ""
    if status in (401, 403):
        hint = " (is the token valid and allowed to write there? set HF_TOKEN or run `hf auth login`)"
    return PublishError(f"{step} failed: HTTP {status}{detail}{hint}")


def _remote_variants(api: Any, repo_id: str, revision: str | None, pushed: set[str]) -> list[CardVariant]:
    """The SAE folders already on the branch that this push leaves alone (``cfg.json`` read back)."""
    names = sorted(
        {
            path.split("/")[0]
            for path in api.list_repo_files(repo_id, revision=revision)
            if path.count("/") == 1 and path.endswith(f"/{CONFIG}") and path.split("/")[0] not in pushed
        }
    )
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            cfg_path = api.hf_hub_download(repo_id, f"{name}/{CONFIG}", revision=revision, cache_dir=tmp)
            try:
                cfg = json.loads(Path(cfg_path).read_text())
            except json.JSONDecodeError:
                cfg = None
            if not isinstance(cfg, dict):
                logger.warning("%s/%s on the Hub is not a JSON object: left out of the card", name, CONFIG)
                continue
            found.append(CardVariant(name, cfg))
    return found


def push(plan: UploadPlan) -> str:
    """Commit ``plan`` to its target (creating the repository and branch when missing); the commit's URL."""
    import httpx2  # huggingface_hub's HTTP client: its transport errors (refused, timed out) reach us raw
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    target = plan.target
    token = target.token or get_token()
    if token is None:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run)")
    api = HfApi(endpoint=target.endpoint, token=token)
    message = target.commit_message or DEFAULT_MESSAGE.format(n=len(plan.variants))
    step = f"creating repository {target.repo_id} on {api.endpoint}"
    try:
        # private=None: a new repository follows the namespace's default unless --private
        repo = api.create_repo(target.repo_id, private=True if target.private else None, exist_ok=True)
        repo_id = repo.repo_id or target.repo_id
        if target.revision is not None:
            step = f"creating branch {target.revision} of {repo_id}"
            api.create_branch(repo_id, branch=target.revision, exist_ok=True)
        step = f"reading the SAE folders already in {repo_id}"
        also = _remote_variants(api, repo_id, target.revision, {v.name for v in plan.variants})
        if also:
            logger.info("the card also describes %d SAE folder(s) already there", len(also))
        files = plan.files(also)
        operations = [
            CommitOperationAdd(path_in_repo=p, path_or_fileobj=src) for p, src in sorted(files.items())
        ]
        step = f"committing to {repo_id}"
        info = api.create_commit(repo_id, operations, commit_message=message, revision=target.revision)
    except HfHubHTTPError as exc:
        raise _http_failure(exc, step) from exc
    except (httpx2.TransportError, OSError) as exc:
        raise PublishError(f"{step}: cannot reach {api.endpoint} ({exc})") from exc
    except ValueError as exc:  # huggingface_hub's own checks (e.g. the card's YAML refused by the Hub)
        raise PublishError(f"{step}: {str(exc).strip().splitlines()[0]}") from exc
    logger.info("pushed %d SAE folder(s) to %s", len(plan.variants), info.commit_url)
    return str(info.commit_url)


def publish(
    target: PushTarget,
    out_dir: str | Path,
    variants: Sequence[str] = (),
    evaluate_json: str | Path | None = None,
    *,
    version: str,
    dry_run: str | Path | None = None,
) -> str:
    """``gsae push``: the trained ``variants`` of ``out_dir`` (all by default), the card's figures
    from ``evaluate_json``, to ``target`` (or into the folder ``dry_run``); the line to print."""
    folders = select_variants(out_dir, variants)
    figures = read_figures(evaluate_json) if evaluate_json else None
    source = os.path.basename(evaluate_json) if evaluate_json else "evaluate.json"
    plan = plan_upload(target, folders, version=version, figures=figures, figures_source=source)
    if dry_run:
        written = write_plan(plan, dry_run)
        return f"{len(folders)} SAE folder(s) + README.md written to {written} (nothing uploaded)"
    return push(plan)
