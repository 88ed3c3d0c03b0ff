"""The self-contained HTML latent browser of one described entry, and the start page of all.

:func:`write_browser` writes ``<folder>/index.html``: one file with inline CSS and JS (the
files in ``assets/``), no network (a Content-Security-Policy forbids every fetch), holding
the entry's ``latents.json`` document, every firing (base64 little-endian typed arrays) and
the token table. The page shows a sortable, filterable table of every latent and, at
``#latent=<id>``, one latent: its figures, activation histogram, logit lists and contexts,
each token shaded by that latent's activation. :func:`write_start_page` writes the index of
every described entry.

Size: a context sample ``[row, act, attr]`` of the document whose act and attr equal the
firing's at that row (always, for documents written by ``describe``) is embedded as its row
alone and read back from the firings; other floats keep 5 significant digits. Every string
(token text, names) is inserted by the script as text, never as markup; the embedded JSON
escapes ``<``, ``>`` and ``&`` so no string can close its ``<script>`` element.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.fileio import atomic_write_text
from pipeline.inspect.firings import Firings, TokenTable

log = logging.getLogger(__name__)

_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
_SAMPLE_LISTS = ("top_act", "top_attr")
_DIGITS = 5
"""Significant digits of the floats embedded in the page (the JSON file keeps them all)."""
_START_COLUMNS = (
    ("architecture", "architecture"),
    ("k", "k"),
    ("n_latents", "latents"),
    ("alive", "alive"),
    ("density_mean", "mean density"),
    ("mean_abs_attr_mean", "mean |attr|"),
)


def write_browser(folder: Path, doc: dict[str, Any], firings: Firings, tokens: TokenTable) -> Path:
    """Write ``folder/index.html``, the browser of one entry's ``doc`` (``latents.json``)."""
    if firings.n_latents != len(doc["latents"]):
        raise ValueError(f"{firings.n_latents} latents of firings for {len(doc['latents'])} in the document")
    data = {
        "doc": _compact_doc(doc, firings, tokens),
        "firings": _firing_arrays(firings, tokens),
        "tokens": _token_table(tokens),
    }
    name = str(doc.get("entry") or doc.get("sae") or "latents")
    body = '<header id="head"></header>\n<main id="app"><p>Loading…</p></main>\n'
    body += _data_script(data) + f"<script>{_asset('browser.js')}</script>\n"
    path = atomic_write_text(Path(folder) / "index.html", _page(f"{name} — latents", body))
    log.info("browser of %s: %s (%.1f MB)", name, path, path.stat().st_size / 1e6)
    return path


def write_start_page(root: Path, entries: list[dict[str, Any]]) -> Path:
    """Write ``root/index.html``: a table of every described entry linking to its browser."""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in _START_COLUMNS)
    rows = "".join(_start_row(e) for e in entries)
    body = (
        '<header id="head"><h1>Latent descriptions</h1>'
        f"<p>{len(entries)} described {'entry' if len(entries) == 1 else 'entries'}; each opens its own latent browser.</p></header>\n"
        f'<main><table class="latents start"><thead><tr><th>entry</th>{head}<th>gradient</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></main>\n"
    )
    return atomic_write_text(Path(root) / "index.html", _page("Latent descriptions", body))


def _start_row(entry: dict[str, Any]) -> str:
    link = f'<a href="{html.escape(str(entry["href"]), quote=True)}">{html.escape(str(entry["name"]))}</a>'
    cells = "".join(f'<td class="num">{html.escape(_fmt(entry.get(key)))}</td>' for key, _ in _START_COLUMNS)
    grad = "with gradient" if entry.get("with_gradient") else "without"
    return f"<tr><td>{link}</td>{cells}<td>{grad}</td></tr>"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_asset('browser.css')}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )


def _asset(name: str) -> str:
    text = resources.files("pipeline.inspect").joinpath("assets").joinpath(name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise ValueError(f"asset {name} would close its own element")
    return text


def _data_script(data: dict[str, Any]) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(char, escape)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f'<script type="application/json" id="gsae-data">{text}</script>\n'


def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _firing_arrays(firings: Firings, tokens: TokenTable) -> dict[str, str | None]:
    """The firings as base64 little-endian arrays; rows relative to ``tokens.first_row``
    (uint16 when they all fit, as on the default run's 8,192 rows: 0.7 MB less; else int32)."""
    if firings.rows.shape[0] >= 2**31:
        raise ValueError("too many firings for the browser's int32 offsets")
    rows = firings.rows - tokens.first_row
    narrow = rows.size == 0 or (int(rows.min()) >= 0 and int(rows.max()) < 2**16)
    return {
        "offsets": _b64(firings.offsets, "<i4"),
        "rows_dtype": "uint16" if narrow else "int32",
        "rows": _b64(rows, "<u2" if narrow else "<i4"),
        "acts": _b64(firings.acts, "<f4"),
        "attrs": None if firings.attrs is None else _b64(firings.attrs, "<f4"),
        "added": None if firings.added is None else _b64(firings.added, "u1"),
    }


def _token_table(tokens: TokenTable) -> dict[str, Any]:
    used = np.unique(tokens.ids).tolist()
    return {
        "first_row": tokens.first_row,
        "context_length": tokens.context_length,
        "ids": _b64(tokens.ids, "<i4"),
        "strings": {str(i): tokens.strings.get(i, f"<id {i}>") for i in used},
    }


def _compact_doc(doc: dict[str, Any], firings: Firings, tokens: TokenTable) -> dict[str, Any]:
    """``doc`` with samples that match their firing reduced to a relative row, floats rounded."""
    known = _FiringLookup(firings, tokens)
    latents = []
    for i, latent in enumerate(doc["latents"]):
        out = {k: _round(v) for k, v in latent.items() if k not in (*_SAMPLE_LISTS, "quantiles")}
        for key in _SAMPLE_LISTS:
            out[key] = [known.sample(i, s) for s in latent.get(key, [])]
        out["quantiles"] = [
            [_round(lo), _round(hi), [known.sample(i, s) for s in samples]]
            for lo, hi, samples in latent.get("quantiles", [])
        ]
        latents.append(out)
    head = {k: _round(v) for k, v in doc.items() if k != "latents"}
    return {**head, "latents": latents}


class _FiringLookup:
    """Finds the firing of (latent, row), to embed a sample that repeats it as its row alone."""

    def __init__(self, firings: Firings, tokens: TokenTable) -> None:
        self.firings, self.first_row, self.n_rows = firings, tokens.first_row, int(tokens.ids.shape[0])
        latent = np.repeat(np.arange(firings.n_latents), np.diff(firings.offsets))
        keys = latent.astype(np.int64) * (self.n_rows + 1) + (firings.rows - self.first_row)
        self.index = {key: j for j, key in enumerate(keys.tolist())}

    def sample(self, latent: int, sample: list[Any]) -> int | list[Any]:
        row, act, attr = int(sample[0]), sample[1], sample[2] if len(sample) > 2 else None
        rel = row - self.first_row
        j = self.index.get(latent * (self.n_rows + 1) + rel) if 0 <= rel < self.n_rows else None
        if j is not None and self._same(j, act, attr):
            return rel
        return [rel, _round(act), _round(attr)]

    def _same(self, j: int, act: Any, attr: Any) -> bool:
        f = self.firings
        if not math.isclose(float(f.acts[j]), float(act), rel_tol=1e-5, abs_tol=1e-7):
            return False
        if f.attrs is None or attr is None:
            return f.attrs is None and attr is None
        return math.isclose(float(f.attrs[j]), float(attr), rel_tol=1e-5, abs_tol=1e-9)


def _round(value: Any) -> Any:
    """``value`` with floats at :data:`_DIGITS` significant digits (non-finite: None)."""
    if isinstance(value, (float, np.floating)):
        x = float(value)
        return float(f"{x:.{_DIGITS}g}") if math.isfinite(x) else None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _round(v) for k, v in value.items()}
    return value
