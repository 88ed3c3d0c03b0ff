"""The latent browser (pipeline.inspect.browser): its page, driven in a real headless chromium.

The browser tests copy the written page, append a probe script that clicks through it (sort,
filter, open a latent) and writes what it saw as JSON into ``<pre id="test-result">``, and
read that back from chromium's ``--dump-dom``. They skip only when no chromium is installed
(``make browser`` installs Debian's).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.inspect.browser import write_browser, write_start_page
from tests.inspect.browser_fixture import EVIL, EVIL_LATENT, make_entry

PROBE = """
<script>
(function () {
  const out = {};
  const ids = () => Array.from(document.querySelectorAll("#latents tbody tr")).map((r) => Number(r.dataset.id));
  const th = document.querySelector('#latents th[data-key="max_act"]');
  th.click(); out.asc = ids();
  th.click(); out.desc = ids();
  const q = document.getElementById("filter");
  q.value = "filterme"; q.dispatchEvent(new Event("input")); out.filtered = ids();
  q.value = ""; q.dispatchEvent(new Event("input"));
  document.getElementById("hide-dead").click(); out.alive = ids();
  out.headers = Array.from(document.querySelectorAll("#latents thead th")).map((t) => t.textContent);
  out.head = document.getElementById("head").textContent;
  document.querySelector('#latents tbody tr[data-id="LATENT"]').click();
  setTimeout(() => {
    out.hash = location.hash;
    out.indexHidden = document.getElementById("index").hidden;
    const blocks = Array.from(document.querySelectorAll("#top-act .ctx"));
    out.topAct = blocks.length;
    out.topAttr = document.querySelectorAll("#top-attr .ctx").length;
    out.fire = blocks.map((b) => Array.from(b.querySelectorAll(".tok.fire")).map((t) => t.textContent));
    out.shaded = blocks.map((b) => Array.from(b.querySelectorAll(".tok")).filter((t) => t.style.backgroundColor).length);
    out.added = document.querySelectorAll("#top-act .ctx.added").length;
    out.latentText = document.getElementById("latent").textContent;
    out.b = document.querySelectorAll("b").length;
    out.scripts = document.scripts.length;
    out.title = document.title;
    const pre = document.createElement("pre");
    pre.id = "test-result";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }, 50);
})();
</script>
"""


def _chromium() -> str:
    for name in (
        os.environ.get("CHROMIUM", ""),
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ):
        if name and shutil.which(name):
            return str(shutil.which(name))
    pytest.skip("chromium not installed: run `make browser` (apt-get install chromium) for the browser tests")


def _run_chromium(url: str, *args: str) -> str:
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=5000",
        *args,
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def _probe(page: Path, latent: int) -> dict[str, Any]:
    probed = page.with_name("probed.html")
    text = page.read_text(encoding="utf-8")
    probed.write_text(
        text.replace("</body>", PROBE.replace("LATENT", str(latent)) + "</body>"), encoding="utf-8"
    )
    dom = _run_chromium(probed.as_uri(), "--dump-dom")
    found = re.search(r'<pre id="test-result">(.*?)</pre>', dom, re.S)
    assert found, f"the probe wrote no result; DOM tail: {dom[-2000:]}"
    return dict(json.loads(html.unescape(found.group(1))))


def _expected_order(doc: dict[str, Any], key: str, reverse: bool) -> list[int]:
    sign = -1 if reverse else 1
    return [lat["id"] for lat in sorted(doc["latents"], key=lambda lat: (sign * lat[key], lat["id"]))]


@pytest.fixture(scope="module")
def entry() -> tuple[dict[str, Any], Any, Any]:
    return make_entry()


def test_browser_page_sorts_filters_and_shows_a_latent(tmp_path: Path, entry: tuple) -> None:
    doc, firings, tokens = entry
    page = write_browser(tmp_path / "e", doc, firings, tokens)
    out = _probe(page, EVIL_LATENT)

    assert out["asc"] == _expected_order(doc, "max_act", reverse=False)
    assert out["desc"] == _expected_order(doc, "max_act", reverse=True)
    with_word = [
        lat["id"] for lat in doc["latents"] if any("filterme" in t.lower() for t, _ in lat["top_tokens"])
    ]
    assert 0 < len(out["filtered"]) < len(doc["latents"]) and sorted(out["filtered"]) == sorted(with_word)
    assert 0 not in out["alive"] and len(out["alive"]) == doc["alive"]
    assert "∇ added" in out["headers"] and "mean |attr|" in out["headers"]
    assert doc["entry"] in out["head"] and "read with the gradient" in out["head"]

    latent = doc["latents"][EVIL_LATENT]
    assert out["hash"] == f"#latent={EVIL_LATENT}" and out["indexHidden"]
    assert out["topAct"] == len(latent["top_act"]) and out["topAttr"] == len(latent["top_attr"])
    assert all(len(f) == 1 for f in out["fire"])
    assert out["fire"][0] == [EVIL]  # the top firing sits on the hostile token, shown as text
    assert all(n >= 1 for n in out["shaded"])
    sl = firings.of(EVIL_LATENT)
    top_rows = [s[0] for s in latent["top_act"]]
    assert out["added"] == sum(bool(firings.added[sl][list(firings.rows[sl]).index(r)]) for r in top_rows)
    assert EVIL in out["latentText"]
    assert out["b"] == 0 and out["scripts"] == 3 and "pwned" not in out["title"]


def test_browser_without_gradient_hides_attribution(tmp_path: Path) -> None:
    doc, firings, tokens = make_entry(gradient=False, n_latents=12)
    out = _probe(write_browser(tmp_path / "e", doc, firings, tokens), 3)
    assert "attribution unavailable: the store holds no gradients" in out["head"]
    assert not any("attr" in h or "∇" in h for h in out["headers"])
    assert out["topAttr"] == 0 and out["topAct"] == len(doc["latents"][3]["top_act"])


def test_browser_screenshot_of_a_latent(tmp_path: Path, entry: tuple) -> None:
    page = write_browser(tmp_path / "e", *entry)
    shot = tmp_path / "latent.png"
    _run_chromium(f"{page.as_uri()}#latent={EVIL_LATENT}", f"--screenshot={shot}", "--window-size=1280,1600")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_page_is_self_contained_and_escapes_its_data(tmp_path: Path, entry: tuple) -> None:
    doc, firings, tokens = entry
    text = write_browser(tmp_path / "e", doc, firings, tokens).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "<link" not in text and "@import" not in text
    assert text.lower().count("</script") == 2  # the data block's and the script's own
    data = json.loads(
        re.search(r'<script type="application/json" id="gsae-data">(.*?)</script>', text, re.S).group(1)
    )
    assert EVIL in data["tokens"]["strings"].values()
    assert data["firings"]["rows_dtype"] == "uint16"
    rows = np.frombuffer(base64.b64decode(data["firings"]["rows"]), "<u2")
    acts = np.frombuffer(base64.b64decode(data["firings"]["acts"]), "<f4")
    np.testing.assert_array_equal(rows, firings.rows - tokens.first_row)
    np.testing.assert_array_equal(acts, firings.acts)
    # samples that repeat their firing are embedded as the relative row alone
    assert data["doc"]["latents"][3]["top_act"] == [
        r - tokens.first_row for r, _, _ in doc["latents"][3]["top_act"]
    ]


def test_sample_differing_from_its_firing_keeps_its_values(tmp_path: Path, entry: tuple) -> None:
    doc, firings, tokens = entry
    odd = json.loads(json.dumps(doc))
    row, act, attr = odd["latents"][3]["top_act"][0]
    odd["latents"][3]["top_act"][0] = [row, act * 2, attr]
    text = write_browser(tmp_path / "e", odd, firings, tokens).read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="gsae-data">(.*?)</script>', text, re.S).group(1))
    assert data["doc"]["latents"][3]["top_act"][0] == [
        row - tokens.first_row,
        pytest.approx(act * 2, rel=1e-4),
        pytest.approx(attr, rel=1e-4),
    ]


def test_start_page_links_every_entry(tmp_path: Path) -> None:
    entries = [
        {
            "name": n,
            "href": f"{n}/index.html",
            "architecture": "topk",
            "k": 32,
            "alive": 100,
            "n_latents": 128,
            "density_mean": 0.01,
            "mean_abs_attr_mean": None,
            "with_gradient": False,
        }
        for n in ("topk_k32", "<i>evil</i>")
    ]
    text = write_start_page(tmp_path, entries).read_text(encoding="utf-8")
    assert 'href="topk_k32/index.html"' in text and "&lt;i&gt;evil&lt;/i&gt;" in text and "<i>" not in text


def test_rows_beyond_uint16_are_embedded_as_int32() -> None:
    from pipeline.inspect.browser import _firing_arrays
    from pipeline.inspect.firings import Firings, TokenTable

    tokens = TokenTable(first_row=0, context_length=16, ids=np.zeros(70_000, np.int32), strings={0: "a"})
    firings = Firings(np.array([0, 2]), np.array([5, 69_999]), np.ones(2, np.float32), None, None)
    arrays = _firing_arrays(firings, tokens)
    assert arrays["rows_dtype"] == "int32" and arrays["attrs"] is None
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(str(arrays["rows"])), "<i4"), [5, 69_999])
