// The g-SAE latent browser (pipeline/inspect/browser.py inlines this file into index.html).
// Reads the JSON in #gsae-data: the entry's document, its firings (base64 little-endian
// typed arrays, rows relative to the token table's first row) and the token table.
// Every string from the data is inserted with textContent / createTextNode, never as markup.
(function () {
  "use strict";

  const raw = JSON.parse(document.getElementById("gsae-data").textContent);
  const doc = raw.doc;
  const latents = doc.latents;

  function bytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  // Typed arrays use the platform's byte order: little-endian on every browser platform in use.
  function typed(b64, Ctor) {
    return b64 == null ? null : new Ctor(bytes(b64));
  }

  const F = {
    offsets: typed(raw.firings.offsets, Int32Array),
    rows: typed(raw.firings.rows, raw.firings.rows_dtype === "uint16" ? Uint16Array : Int32Array),
    acts: typed(raw.firings.acts, Float32Array),
    attrs: typed(raw.firings.attrs, Float32Array),
    added: typed(raw.firings.added, Uint8Array),
  };
  const T = {
    first: raw.tokens.first_row,
    ctx: raw.tokens.context_length,
    ids: typed(raw.tokens.ids, Int32Array),
    strings: raw.tokens.strings,
  };
  const withAttr = !!doc.gradient_available && F.attrs !== null;
  const withGradCols = latents.some((l) => "grad_added" in l);
  const SVG = "http://www.w3.org/2000/svg";

  // ---------- small helpers ----------
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function visible(s) {
    return String(s).replace(/\r\n|\r|\n/g, "⏎").replace(/\t/g, "⇥");
  }
  function fmt(x) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    if (Number.isInteger(x) && Math.abs(x) < 1e7) return String(x);
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
    return String(Number(x.toPrecision(4)));
  }
  function signed(x) {
    if (x === null || x === undefined) return "–";
    return (x > 0 ? "+" : "") + fmt(x);
  }
  function tokenText(rel) {
    const s = T.strings[T.ids[rel]];
    return s === undefined ? "<id " + T.ids[rel] + ">" : s;
  }
  function tokSpan(text, cls) {
    const s = el("span", cls || "tok", visible(text));
    return s;
  }

  // latent -> Map(relative row -> flat firing index), built when first needed
  const rowMaps = new Map();
  function rowMap(i) {
    let m = rowMaps.get(i);
    if (!m) {
      m = new Map();
      for (let j = F.offsets[i]; j < F.offsets[i + 1]; j++) m.set(F.rows[j], j);
      rowMaps.set(i, m);
    }
    return m;
  }
  function firing(i, rel) {
    const j = rowMap(i).get(rel);
    if (j === undefined) return null;
    return { act: F.acts[j], attr: F.attrs ? F.attrs[j] : null, added: F.added ? F.added[j] === 1 : false };
  }
  // a document sample: a relative row (act/attr from the firing) or [row, act, attr]
  function sample(i, s) {
    if (typeof s === "number") return Object.assign({ row: s }, firing(i, s));
    const f = firing(i, s[0]);
    return { row: s[0], act: s[1], attr: s[2], added: f ? f.added : false };
  }

  // ---------- header ----------
  function header() {
    const head = document.getElementById("head");
    head.replaceChildren();
    const h1 = el("h1", null, doc.entry || doc.sae);
    h1.appendChild(el("span", "badge", doc.with_gradient ? "read with the gradient" : "read without the gradient"));
    head.appendChild(h1);
    const facts = [
      ["SAE", doc.sae], ["architecture", doc.architecture], ["k", doc.k], ["β", doc.beta],
      ["model", doc.model], ["hook", doc.hook], ["store", doc.store],
      ["rows", doc.rows ? doc.rows[0] + "–" + (doc.rows[0] + doc.rows[1]) + " (" + doc.rows[1] + ")" : null],
      ["alive", doc.alive !== undefined ? doc.alive + " / " + doc.n_latents : null],
    ];
    const p = el("p", "facts");
    for (const [k, v] of facts) {
      if (v === undefined || v === null) continue;
      const f = el("span", "fact");
      f.appendChild(el("span", "key", k));
      f.appendChild(document.createTextNode(" " + (typeof v === "number" ? fmt(v) : v)));
      p.appendChild(f);
    }
    head.appendChild(p);
    if (!doc.gradient_available) head.appendChild(el("p", "warn", "attribution unavailable: the store holds no gradients"));
  }

  // ---------- index view ----------
  const columns = [
    { key: "id", label: "id" },
    { key: "density", label: "density" },
    { key: "mean_act", label: "mean act" },
    { key: "max_act", label: "max act" },
  ];
  if (withAttr) {
    columns.push({ key: "mean_abs_attr", label: "mean |attr|" }, { key: "attr_per_act", label: "attr / act" });
  }
  if (withGradCols) {
    columns.push({ key: "grad_added", label: "∇ added" }, { key: "grad_removed", label: "∇ removed" });
  }
  const PAGE = 500; // rows rendered at a time: laying out all 4,608 at once takes seconds
  const state = { key: "id", dir: 1, index: null, limit: PAGE };

  function buildIndex() {
    const box = el("section", "index");
    box.id = "index";
    const bar = el("div", "controls");
    const q = el("input");
    q.id = "filter";
    q.type = "search";
    q.placeholder = "filter: id or top-token text";
    const dead = el("input");
    dead.id = "hide-dead";
    dead.type = "checkbox";
    const dl = el("label");
    dl.append(dead, document.createTextNode(" hide dead"));
    const md = el("input");
    md.id = "min-density";
    md.type = "number";
    md.min = "0";
    md.step = "any";
    md.placeholder = "0";
    const ml = el("label", null, "min density ");
    ml.appendChild(md);
    const count = el("span", "count");
    count.id = "count";
    bar.append(q, dl, ml, count);
    box.appendChild(bar);

    const table = el("table", "latents");
    table.id = "latents";
    const tr = el("tr");
    for (const c of columns) {
      const th = el("th", "sortable", c.label);
      th.dataset.key = c.key;
      th.addEventListener("click", () => sortBy(c.key));
      tr.appendChild(th);
    }
    tr.appendChild(el("th", null, "top tokens"));
    table.appendChild(el("thead")).appendChild(tr);
    const tbody = el("tbody");
    table.appendChild(tbody);
    box.appendChild(table);
    const more = el("div", "more-rows");
    const moreBtn = el("button", null, "show more");
    moreBtn.id = "show-more";
    moreBtn.addEventListener("click", () => { state.limit += PAGE; refresh(); });
    const allBtn = el("button", null, "show all");
    allBtn.id = "show-all";
    allBtn.addEventListener("click", () => { state.limit = Infinity; refresh(); });
    more.append(moreBtn, allBtn);
    box.appendChild(more);

    const rows = latents.map((l) => {
      const r = el("tr");
      r.dataset.id = l.id;
      if (!(l.density > 0)) r.classList.add("dead");
      for (const c of columns) r.appendChild(el("td", "num", fmt(l[c.key])));
      const td = el("td", "toks");
      for (const [t, n] of (l.top_tokens || []).slice(0, 8)) {
        const s = tokSpan(t);
        s.title = "count " + n;
        td.appendChild(s);
      }
      r.appendChild(td);
      r.addEventListener("click", () => { location.hash = "latent=" + l.id; });
      return r;
    });
    const search = latents.map((l) => (l.top_tokens || []).map((t) => t[0]).join("\u0000").toLowerCase());
    state.index = { box, tbody, rows, search, q, dead, md, count, table, more };
    for (const input of [q, dead, md]) input.addEventListener("input", refresh);
    dead.addEventListener("change", refresh);
    refresh();
    return box;
  }

  function sortBy(key) {
    if (state.key === key) state.dir = -state.dir;
    else { state.key = key; state.dir = 1; }
    refresh();
  }

  function keep(i) {
    const s = state.index;
    const l = latents[i];
    if (s.dead.checked && !(l.density > 0)) return false;
    const md = parseFloat(s.md.value);
    if (!Number.isNaN(md) && !(l.density >= md)) return false;
    const q = s.q.value.trim().toLowerCase();
    if (!q) return true;
    if (/^\d+$/.test(q) && l.id === Number(q)) return true;
    return s.search[i].includes(q);
  }

  function refresh() {
    const s = state.index;
    const key = state.key, dir = state.dir;
    const value = (i) => { const v = latents[i][key]; return v === null || v === undefined ? null : v; };
    const order = latents.map((_, i) => i).filter(keep);
    order.sort((a, b) => {
      const va = value(a), vb = value(b);
      if (va === vb) return a - b;
      if (va === null) return 1; // missing values last either way
      if (vb === null) return -1;
      return va < vb ? -dir : dir;
    });
    const frag = document.createDocumentFragment();
    const shown = order.slice(0, state.limit);
    for (const i of shown) frag.appendChild(s.rows[i]);
    s.tbody.replaceChildren(frag);
    s.count.textContent = order.length + " of " + latents.length + " latents"
      + (shown.length < order.length ? " (first " + shown.length + " shown)" : "");
    s.more.hidden = shown.length >= order.length;
    for (const th of s.table.querySelectorAll("th.sortable")) {
      th.removeAttribute("aria-sort");
      if (th.dataset.key === key) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    }
  }

  // ---------- latent view ----------
  function histogram(l) {
    const counts = l.hist || [];
    const w = 420, h = 130, pad = 22;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("class", "hist");
    const max = Math.max(1, ...counts);
    const bw = (w - 2 * pad) / Math.max(1, counts.length);
    counts.forEach((c, k) => {
      const bh = (h - 2 * pad) * Math.sqrt(c / max);
      const r = document.createElementNS(SVG, "rect");
      r.setAttribute("x", pad + k * bw);
      r.setAttribute("y", h - pad - bh);
      r.setAttribute("width", Math.max(0.5, bw - 1));
      r.setAttribute("height", bh);
      const t = document.createElementNS(SVG, "title");
      const lo = (l.max_act * k) / counts.length, hi = (l.max_act * (k + 1)) / counts.length;
      t.textContent = "act " + fmt(lo) + "–" + fmt(hi) + ": " + c;
      r.appendChild(t);
      svg.appendChild(r);
    });
    const text = (x, y, s, anchor) => {
      const t = document.createElementNS(SVG, "text");
      t.setAttribute("x", x);
      t.setAttribute("y", y);
      t.setAttribute("text-anchor", anchor);
      t.textContent = s;
      svg.appendChild(t);
    };
    text(pad, h - 6, "0", "start");
    text(w - pad, h - 6, fmt(l.max_act), "end");
    text(w / 2, h - 6, "activation (bar height ∝ √count)", "middle");
    text(pad, 14, "max " + max, "start");
    return svg;
  }

  function summary(i, l) {
    const dl = el("dl", "summary");
    const n = F.offsets[i + 1] - F.offsets[i];
    const items = [["firings", n], ["density", l.density], ["mean act", l.mean_act], ["max act", l.max_act]];
    if (withAttr) items.push(["mean |attr|", l.mean_abs_attr], ["attr / act", l.attr_per_act]);
    if (withGradCols) items.push(["∇ added", l.grad_added], ["∇ removed", l.grad_removed]);
    for (const [k, v] of items) {
      const d = el("div");
      d.append(el("dt", null, k), el("dd", null, fmt(v)));
      dl.appendChild(d);
    }
    return dl;
  }

  function tokenList(title, pairs, cls) {
    const box = el("div", "toklist " + (cls || ""));
    box.appendChild(el("h3", null, title));
    const ol = el("ol");
    for (const [t, v] of pairs || []) {
      const li = el("li");
      li.append(tokSpan(t), el("span", "val", fmt(v)));
      ol.appendChild(li);
    }
    if (!(pairs && pairs.length)) ol.appendChild(el("li", "empty", "none"));
    box.appendChild(ol);
    return box;
  }

  function context(i, l, s, w) {
    const box = el("div", "ctx" + (s.added ? " added" : ""));
    const meta = el("div", "meta");
    meta.appendChild(el("span", null, "row " + (T.first + s.row) + " · act " + fmt(s.act)));
    if (withAttr && s.attr !== null && s.attr !== undefined) {
      meta.appendChild(el("span", s.attr > 0 ? "pos" : s.attr < 0 ? "neg" : null, " · attr " + signed(s.attr)));
    }
    if (s.added) meta.appendChild(el("span", "badge grad", "+∇ added by the gradient"));
    box.appendChild(meta);
    const line = el("div", "text");
    if (s.row < 0 || s.row >= T.ids.length) {
      line.appendChild(el("span", "empty", "row outside the described rows"));
      box.appendChild(line);
      return box;
    }
    const abs = T.first + s.row;
    const start = abs - (abs % T.ctx) - T.first, stop = start + T.ctx;
    const lo = Math.max(start, 0, s.row - w), hi = Math.min(stop, T.ids.length, s.row + w + 1);
    if (lo > start) line.appendChild(el("span", "more", "…"));
    const scale = l.max_act > 0 ? l.max_act : 1;
    for (let r = lo; r < hi; r++) {
      const f = firing(i, r);
      const span = tokSpan(tokenText(r));
      let tip = "row " + (T.first + r) + "\nact " + (f ? fmt(f.act) : "0");
      if (f) {
        span.style.backgroundColor = "rgba(255, 140, 0, " + Math.min(1, 0.12 + 0.88 * f.act / scale).toFixed(3) + ")";
        if (withAttr && f.attr !== null) {
          tip += "\nattr " + signed(f.attr);
          span.classList.add(f.attr > 0 ? "apos" : "aneg");
        }
        if (f.added) { span.classList.add("gadded"); tip += "\nadded by the gradient"; }
      }
      if (r === s.row) span.classList.add("fire");
      span.title = tip;
      line.appendChild(span);
    }
    if (hi < stop && hi < T.ids.length) line.appendChild(el("span", "more", "…"));
    box.appendChild(line);
    return box;
  }

  function contexts(title, i, l, samples, id) {
    const sec = el("section", "contexts");
    if (id) sec.id = id;
    sec.appendChild(el("h3", null, title));
    const w = doc.window === undefined ? 8 : doc.window;
    for (const s of samples) sec.appendChild(context(i, l, sample(i, s), w));
    if (!samples.length) sec.appendChild(el("p", "empty", "no firings"));
    return sec;
  }

  function latentView(i) {
    const l = latents[i];
    const box = el("section", "latent");
    box.id = "latent";
    const nav = el("nav");
    const link = (href, text) => { const a = el("a", null, text); a.href = href; return a; };
    nav.appendChild(link("#", "← all latents"));
    if (i > 0) nav.appendChild(link("#latent=" + (i - 1), "‹ " + (i - 1)));
    if (i + 1 < latents.length) nav.appendChild(link("#latent=" + (i + 1), (i + 1) + " ›"));
    box.appendChild(nav);
    const h2 = el("h2", null, "Latent " + l.id);
    if (!(l.density > 0)) h2.appendChild(el("span", "badge dead", "dead"));
    box.appendChild(h2);

    const top = el("div", "overview");
    const left = el("div");
    left.append(summary(i, l), histogram(l));
    top.appendChild(left);
    top.appendChild(tokenList("top tokens", l.top_tokens));
    top.appendChild(tokenList("logits up", l.logits_up, "up"));
    top.appendChild(tokenList("logits down", l.logits_down, "down"));
    box.appendChild(top);
    if (doc.logit_note) box.appendChild(el("p", "note", doc.logit_note));
    box.appendChild(el("p", "note", "Each token is shaded by this latent's activation there; the firing token is outlined"
      + (withAttr ? "; an underline gives the attribution's sign (green: the latent lowers the loss)" : "")
      + ". Hover a token for act and attr."));

    box.appendChild(contexts("Top activations", i, l, l.top_act || [], "top-act"));
    if (withAttr) box.appendChild(contexts("Top attributions (by |attr|)", i, l, l.top_attr || [], "top-attr"));
    const qs = el("section", "quantiles");
    qs.id = "quantiles";
    qs.appendChild(el("h3", null, "Quantile samples"));
    for (const [lo, hi, samples] of l.quantiles || []) {
      qs.appendChild(contexts("act in [" + fmt(lo) + ", " + fmt(hi) + "]", i, l, samples));
    }
    if (!(l.quantiles && l.quantiles.length)) qs.appendChild(el("p", "empty", "no firings"));
    box.appendChild(qs);
    return box;
  }

  // ---------- routing ----------
  function route() {
    const app = document.getElementById("app");
    const m = /^#latent=(\d+)$/.exec(location.hash);
    const i = m ? Number(m[1]) : -1;
    if (i >= 0 && i < latents.length) {
      if (state.index) state.index.box.hidden = true;
      const old = document.getElementById("latent");
      if (old) old.remove();
      app.appendChild(latentView(i));
      document.title = (doc.entry || doc.sae) + " — latent " + i;
      window.scrollTo(0, 0);
    } else {
      const old = document.getElementById("latent");
      if (old) old.remove();
      if (!state.index) app.replaceChildren(buildIndex());
      state.index.box.hidden = false;
      document.title = (doc.entry || doc.sae) + " — latents";
    }
  }

  header();
  document.getElementById("app").replaceChildren();
  window.addEventListener("hashchange", route);
  route();
})();
