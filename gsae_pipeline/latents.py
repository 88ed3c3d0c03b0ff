"""The latent browser's per-latent figures (``reports/latents/<entry>/latents.json``) as a table.

``gsae inspect`` writes one ``latents.json`` per entry (DESIGN §3 "Latent descriptions"):
the entry's settings and one record per latent, in id order — ``density``, ``mean_act``,
``max_act``, ``mean_abs_attr``..., ``top_act`` and ``top_attr`` ([row, act, attr] with
``row`` a row of the described store), ``logits_up`` / ``logits_down`` ([token, value]).
:func:`load_latents` reads it into a :class:`LatentTable`: records by latent id, numeric
columns as numpy arrays, rankings, and each firing's context read back from the store's
``tokens`` (:meth:`LatentTable.contexts`; :func:`load_tokenizer` gives their text). No
pandas needed (:meth:`LatentTable.to_pandas` when it is installed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cache.integrity import open_array
from cache.reader import open_store
from cache.store import open_group
from pipeline.core.errors import DataError, ModelLoadError, PipelineError

LATENTS_JSON = "latents.json"
FIRING_LISTS = ("top_act", "top_attr")
"""Lists of firings per latent, each ``[row, act, attr]`` (attr null without gradients)."""


class LatentsNotFound(PipelineError, FileNotFoundError):
    """No ``latents.json`` where one was asked for."""


class LatentTable:
    """The latents of one described entry. ``table[i]`` is latent i's record (a dict), ``len``
    the number of latents, ``meta`` the entry's settings (``sae``, ``store``, ``rows``,
    ``with_gradient``, ``hook``, ``k``...)."""

    def __init__(self, doc: dict[str, Any], source: str = "") -> None:
        latents = doc.get("latents")
        if not isinstance(latents, list) or not all(isinstance(x, dict) and "id" in x for x in latents):
            raise DataError(f"{source or 'document'}: not a latents.json document (no latents list)")
        self.source = source
        self.meta: dict[str, Any] = {k: v for k, v in doc.items() if k != "latents"}
        self.records: list[dict[str, Any]] = sorted(latents, key=lambda x: int(x["id"]))
        self._by_id = {int(x["id"]): x for x in self.records}

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def __getitem__(self, latent: int) -> dict[str, Any]:
        try:
            return self._by_id[int(latent)]
        except KeyError:
            raise KeyError(
                f"no latent {latent} in {self.source or 'this table'} ({len(self)} latents)"
            ) from None

    def __repr__(self) -> str:
        return f"LatentTable({self.meta.get('entry', self.meta.get('sae'))!r}, {len(self)} latents)"

    @property
    def columns(self) -> list[str]:
        """The numeric per-latent fields (``id``, ``density``, ``mean_act``, ``max_act``...)."""
        first = self.records[0] if self.records else {}
        return [k for k, v in first.items() if v is None or isinstance(v, (int, float))]

    def column(self, name: str) -> np.ndarray:
        """One numeric field over all latents, in id order (float64; null → nan)."""
        if name not in self.columns:
            raise KeyError(f"{name!r} is not a numeric latent field (fields: {', '.join(self.columns)})")
        return np.array(
            [math.nan if x.get(name) is None else x[name] for x in self.records], dtype=np.float64
        )

    def top(self, by: str = "density", n: int = 10, *, ascending: bool = False) -> list[dict[str, Any]]:
        """The ``n`` latent records with the largest (``ascending``: smallest) ``by``, nan last."""
        values = self.column(by)
        key = np.where(np.isnan(values), np.inf, values if ascending else -values)
        order = np.argsort(key, kind="stable")[:n]
        return [self.records[i] for i in order]

    def to_pandas(self) -> Any:
        """The numeric columns as a ``pandas.DataFrame`` indexed by latent id (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(
            {c: self.column(c) for c in self.columns if c != "id"}, index=self.column("id").astype(int)
        )

    def contexts(
        self,
        latent: int,
        by: str = "top_act",
        *,
        n: int | None = None,
        window: int | None = None,
        store: str | None = None,
        tokenizer: Any = None,
    ) -> list[dict[str, Any]]:
        """Latent ``latent``'s listed firings (``by``: ``top_act`` or ``top_attr``) with their contexts.

        Each is a dict: ``row``, ``act``, ``attr``, ``ids`` (token ids of up to ``window``
        tokens either side of the firing, within its context; default: the browser's
        ``window``), ``at`` (the firing's index in ``ids``) and, with a Hugging Face
        ``tokenizer``, ``tokens`` (each id's text). ``store`` defaults to the one described.
        """
        if by not in FIRING_LISTS:
            raise ValueError(f"by must be one of {FIRING_LISTS}, got {by!r}")
        firings = self[latent].get(by) or []
        firings = firings if n is None else firings[:n]
        url = str(store if store is not None else self.meta["store"])
        info = open_store(url, require_complete=False)
        T = info.context_length
        w = int(self.meta.get("window", 8) if window is None else window)
        tokens = open_array(url, open_group(url, "r"), "tokens")
        out = []
        for row, act, attr in firings:
            lo = max(row - w, row - row % T)
            hi = min(row + w + 1, row - row % T + T, info.committed_tokens)
            ids = np.asarray(tokens[lo:hi]).astype(np.int64).tolist()
            out.append({"row": int(row), "act": act, "attr": attr, "ids": ids, "at": int(row - lo)})
        if tokenizer is not None:
            distinct = sorted({i for c in out for i in c["ids"]})
            text = dict(zip(distinct, tokenizer.batch_decode([[i] for i in distinct]), strict=True))
            for c in out:
                c["tokens"] = [text[i] for i in c["ids"]]
        return out


def load_latents(path: str | Path) -> LatentTable:
    """The :class:`LatentTable` of ``path``: a ``latents.json`` file or the entry folder holding it
    (``reports/latents/<entry>``)."""
    p = Path(path)
    if p.is_dir():
        p = p / LATENTS_JSON
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise LatentsNotFound(f"no {LATENTS_JSON} at {p} (run `gsae inspect` first)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{p}: not a latents.json document")
    return LatentTable(doc, str(p))


def load_tokenizer(name: str) -> Any:
    """The Hugging Face tokenizer of a model as ``model.name`` names it (a store's ``model``
    attribute, ``store_info(store).model``): the ``smollm2-135m`` alias (its converted folder,
    made once, offline), a local folder or a hub id (the store's ``tokenizer`` attribute names
    one too, but for the alias that is the hub id, which needs the hub or its cache).
    ``ModelLoadError`` when it cannot be loaded."""
    from transformers import AutoTokenizer

    from pipeline.lm.gguf_folder import converted_folder
    from pipeline.lm.models import SMOLLM2_ALIAS, smollm2_gguf

    source = str(converted_folder(smollm2_gguf())) if name == SMOLLM2_ALIAS else name
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"cannot load the tokenizer of {name!r}: {first}") from exc
