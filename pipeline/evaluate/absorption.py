"""Feature absorption on first-letter features (Chanin et al. 2024, as SAEBench 0.6.0 scores it).

Offline: the prompts are built from the model's own vocabulary. Per evaluated hook block:

1. **Words.** ``absorption_words`` single tokens of the vocabulary that are a space followed by
   ASCII letters (``" cat"``) and tokenize back to themselves, sampled with ``seed``; 80 % train,
   20 % test (SAEBench's split). The in-context examples are other words (all of them when the
   vocabulary is too small for that, e.g. the tests' tiny tokenizer). The label is the first letter (26 classes).
2. **Prompts.** SAEBench's ``"{word} has the first letter:"`` after 10 in-context examples
   ``"{ex} has the first letter: E"`` (one per line, the prompt opening with a newline and the
   model's BOS token), probed at the word's token (SAEBench's position −6). The tokens after the
   word cannot change the activation there (causal attention), so the activation is one token's
   forward from the cached prefix, stopped at the hook block.
3. **Ground-truth probes.** One-vs-rest logistic regressions on the train words' activations
   (:func:`pipeline.evaluate.probes.fit_dense_probe`); a letter is scored only when its probe's
   test F1 is ≥ 0.6 (SAEBench ``min_GT_probe_f1``) and it has ≥ ``absorption_min_words`` test
   true positives (SAEBench ``min_feats_for_eval`` = 20).
4. **Main (split) latents**, per SAE and letter: an L1 probe on the SAE's code ranks latents;
   k-sparse probes on its top k = 1..10 latents are fitted on the train words and scored by
   test F1; k grows while F1 improves by more than 0.03 (``f1_jump_threshold``). The latents of
   the last accepted k are the letter's main latents; their count is the split count.
5. **Absorption**, per test word the probe gets right (letter and score > 0), with p̂ the unit
   probe direction, P = x·p̂ and P_i = a_i (d_i·p̂) the projection of latent i's contribution
   (a_i · cos_i for unit decoder rows, SAEBench's formula):
   - fraction: 0 if the main latents' Σ P_i ≥ P or the top-3 positive P_i of latents with
     cos_i ≥ 0.1 outside the main ones sum to < 0.4 P; 1 if the main latents' sum is ≤ 0;
     else A / (A + main) with A = min(top-3 sum, P − main);
   - full: every main latent is off, P ≥ 0, and the latent with the largest P_i has
     cos ≥ 0.025 and P_i ≥ 0.4 P.

Metrics (per entry, means over the scored letters of per-letter means over their words):
``absorption_rate`` (SAEBench ``mean_absorption_fraction_score``), ``absorption_full``
(``mean_full_absorption_score``), ``absorption_split_latents`` (``mean_num_split_features``),
``absorption_letters`` (letters scored; the other three are left out when it is 0),
``absorption_grad`` (1 when gradient-aware SAEs selected with the gradient).

**g-SAEs: the β = 0 twin by default, their gradient on request** (``evaluate.absorption_grad``).
With the gradient, a gradient-aware SAE encodes each word with g = ∂L/∂x at the
probed position, L = the cross-entropy of the answer letter (``" C"``) after the full prompt
``"… {word} has the first letter:"``, computed on the clean model (only the blocks after the
hook are differentiated). That is the selection the g-SAE makes when the model is asked the
question the probe encodes; the ``<variant>@beta0`` twin (what SAEBench can evaluate: an SAE
whose ``encode`` takes only x) is reported beside it, so the gradient's effect is the
difference. This g is the answer's loss only, not the harvest's sum over every later position
(DESIGN §1): it is the task's loss, and it costs one logit row instead of six. It still costs a
full forward of the 6-token question and a backward through the blocks after the hook per word
(~40 ms/word on 2 CPU cores for SmolLM2-135M, against ~2 ms for the activation alone), 20× the
rest of the metric, so the default scores every gradient-aware SAE as its β = 0 twin (its
figures then equal the ``@beta0`` entry's; the metrics say which: ``absorption_grad`` 0 or 1).

**Simplifications against SAEBench** (documented in docs and the README): a few fixed in-context
prefixes (4, words assigned round-robin) instead of fresh random examples per prompt; only
space-led words (SAEBench also takes word pieces such as ``"ing"``); the same prompt for the
probes and the absorption scoring (SAEBench re-samples the examples); probes fitted full-batch
on a few hundred words instead of the whole vocabulary's, so figures carry more sampling noise.
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.errors import ConfigError
from pipeline.evaluate.probes import f1_scores, fit_dense_probe, fit_l1_probe, fit_small_logreg
from pipeline.lm.models import LoadedModel
from pipeline.saes.base import SAE

log = logging.getLogger(__name__)

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TEMPLATE_TAIL = " has the first letter:"
ICL_EXAMPLES = 10
N_PREFIXES = 4
TRAIN_FRACTION = 0.8
MAX_K = 10
F1_JUMP = 0.03
MIN_PROBE_F1 = 0.6
FULL_COS = 0.025
FRACTION_COS = 0.1
PROJ_PROPORTION = 0.4
MAX_ABSORBERS = 3
EPS = 1e-8
KEYS = (
    "absorption_rate",
    "absorption_full",
    "absorption_split_latents",
    "absorption_letters",
    "absorption_grad",
)


def vocab_words(tokenizer: Any) -> list[tuple[str, int]]:
    """(word, token id) of every token that decodes to a space + ASCII letters and re-tokenizes to itself."""
    cands = []
    for tok, i in sorted(tokenizer.get_vocab().items(), key=lambda t: t[1]):
        w = tokenizer.convert_tokens_to_string([tok])
        if len(w) > 1 and w[0] == " " and w[1:].isascii() and w[1:].isalpha():
            cands.append((w, i))
    if not cands:
        return []
    enc = tokenizer([w for w, _ in cands], add_special_tokens=False)["input_ids"]
    return [(w, i) for (w, i), ids in zip(cands, enc, strict=True) if list(ids) == [i]]


@dataclass
class LetterData:
    """Words, labels, activations (and gradients) at one block, and the ground-truth probes."""

    words: list[str]
    letters: torch.Tensor
    """[N] int64 first-letter class."""
    acts: torch.Tensor
    """[N, d] float32 activation at the word's position."""
    grads: torch.Tensor | None
    """[N, d] ∂CE(answer)/∂activation, when a gradient-aware SAE needs it."""
    train: torch.Tensor
    """[N] bool: train split (else test)."""
    probe_w: torch.Tensor
    """[26, d] ground-truth probe weights."""
    probe_b: torch.Tensor
    """[26] probe biases."""


class _Stop(Exception):
    pass


def _cache_kw(lm: LoadedModel) -> str:
    params = inspect.signature(lm.model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _forward(
    lm: LoadedModel, block: int, cache: Any, ids: torch.Tensor, answer: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Activation at the first new position (and ∂CE(answer)/∂it) for rows ``ids`` after the cached prefix."""
    c = copy.deepcopy(cache)
    c.batch_repeat_interleave(ids.shape[0])
    kw = {_cache_kw(lm): c, "use_cache": True}
    captured: dict[str, torch.Tensor] = {}

    def hook(_m: Any, _i: Any, out: Any) -> Any:
        h = out[0] if isinstance(out, tuple) else out
        if answer is None:
            captured["x"] = h.detach()
            raise _Stop
        h = h.detach().requires_grad_(True)
        captured["x"] = h
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = lm.blocks[block].register_forward_hook(hook)
    try:
        if answer is None:
            try:
                with torch.no_grad():
                    lm.model(input_ids=ids[:, :1], **kw)
            except _Stop:
                pass
            return captured["x"][:, 0].float(), None
        with torch.enable_grad():
            logits = lm.model(input_ids=ids, logits_to_keep=1, **kw).logits[:, -1].float()
            (g,) = torch.autograd.grad(F.cross_entropy(logits, answer, reduction="sum"), [captured["x"]])
        return captured["x"][:, 0].detach().float(), g[:, 0].float()
    finally:
        handle.remove()


@torch.no_grad()
def collect(
    lm: LoadedModel, block: int, n_words: int, *, seed: int, with_grad: bool, batch_size: int = 64
) -> LetterData:
    """Sample the words, run the prompts to ``block`` (or through the model, for gradients), fit the probes."""
    tok = lm.tokenizer
    vocab = vocab_words(tok)
    if len(vocab) < 10:
        raise ConfigError(
            f"absorption: {lm.name}'s vocabulary has only {len(vocab)} space-led alphabetic single tokens"
        )
    if len(vocab) < n_words + N_PREFIXES * ICL_EXAMPLES:
        log.warning("absorption: %d vocabulary words available, %d asked for", len(vocab), n_words)
    rng = np.random.default_rng([seed, 0xAB5])
    pick = rng.permutation(len(vocab))
    n_words = min(n_words, len(vocab))
    words = [vocab[j] for j in pick[:n_words]]
    rest = pick[n_words:]
    if rest.size < N_PREFIXES * ICL_EXAMPLES:  # small vocabularies: examples may be scored words too
        n_icl = N_PREFIXES * ICL_EXAMPLES
        rest = rng.choice(len(vocab), size=n_icl, replace=len(vocab) < n_icl)
    icl = [vocab[j][0] for j in rest[: N_PREFIXES * ICL_EXAMPLES]]
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    tail = _ids(tok, TEMPLATE_TAIL)
    answers = [_ids(tok, " " + c.upper())[0] for c in LETTERS]
    letters = torch.tensor([LETTERS.index(w[1].lower()) for w, _ in words])
    acts = torch.empty(n_words, lm.d_model)
    grads = torch.empty(n_words, lm.d_model) if with_grad else None
    for p in range(N_PREFIXES):
        lines = [
            f"{ex}{TEMPLATE_TAIL} {ex[1].upper()}" for ex in icl[p * ICL_EXAMPLES : (p + 1) * ICL_EXAMPLES]
        ]
        prefix = torch.tensor([bos + _ids(tok, "\n" + "\n".join(lines) + "\n")])
        cache = lm.model(input_ids=prefix.to(lm.device), use_cache=True).past_key_values
        rows = torch.arange(p, n_words, N_PREFIXES)
        for chunk in rows.split(batch_size):
            ids = torch.tensor([[words[r][1], *tail] for r in chunk.tolist()], device=lm.device)
            ans = torch.tensor([answers[int(letters[r])] for r in chunk.tolist()], device=lm.device)
            x, g = _forward(lm, block, cache, ids, ans if with_grad else None)
            acts[chunk] = x.cpu()
            if grads is not None and g is not None:
                grads[chunk] = g.cpu()
    train = torch.zeros(n_words, dtype=torch.bool)
    train[: int(TRAIN_FRACTION * n_words)] = True
    w, b = fit_dense_probe(acts[train], F.one_hot(letters[train], len(LETTERS)))
    return LetterData([w for w, _ in words], letters, acts, grads, train, w, b)


def _split_latents(
    idx: torch.Tensor, val: torch.Tensor, dense: torch.Tensor, data: LetterData, n_latents: int
) -> list[list[int]]:
    """Per letter, the main latents: the k-sparse probe's latents at the last k whose test F1 still jumped."""
    tr, te = data.train, ~data.train
    y_tr = F.one_hot(data.letters[tr], len(LETTERS))
    w_l1 = fit_l1_probe(idx[tr], val[tr], n_latents, y_tr)  # [26, n]
    kmax = min(MAX_K, n_latents)
    top = w_l1.topk(kmax, dim=1).indices  # [26, kmax], descending: top k = the first k
    n_let = len(LETTERS)
    # problem (letter c, k): the first k of top[c], later columns zeroed
    keep = (torch.arange(kmax)[None, :] < torch.arange(1, kmax + 1)[:, None]).double()  # [k, kmax]

    def features(rows: torch.Tensor) -> torch.Tensor:
        x = dense[rows][:, top.flatten()].double().view(-1, n_let, kmax).permute(1, 0, 2)  # [26, N, kmax]
        return (x[:, None] * keep[None, :, None, :]).reshape(n_let * kmax, -1, kmax)

    y_train = (data.letters[tr][None, :] == torch.arange(n_let)[:, None]).repeat_interleave(kmax, 0)
    theta = fit_small_logreg(features(tr), y_train)
    x_te = features(te)
    scores = torch.einsum("pnk,pk->pn", x_te, theta[:, :-1]) + theta[:, -1:]
    y_test = (data.letters[te][None, :] == torch.arange(n_let)[:, None]).repeat_interleave(kmax, 0)
    f1 = f1_scores(scores > 0, y_test).view(n_let, kmax)
    out = []
    for c in range(n_let):
        best, feats = -100.0, []
        for k in range(kmax):
            if f1[c, k] > best + F1_JUMP:
                best, feats = float(f1[c, k]), top[c, : k + 1].tolist()
            else:
                break
        out.append(feats)
    return out


def _word_absorption(
    x: torch.Tensor, a: torch.Tensor, probe: torch.Tensor, w_dec: torch.Tensor, main: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fraction [T], full [T] bool) for activations x [T, d] with SAE codes a [T, n]."""
    p = probe / probe.norm()
    along = w_dec @ p  # d_i · p̂
    cos = along / w_dec.norm(dim=1).clamp_min(1e-12)
    total = x @ p  # P
    proj = a * along  # P_i
    is_main = torch.zeros(a.shape[1], dtype=torch.bool)
    is_main[main] = True
    main_sum = proj[:, is_main].sum(1)
    cand = (~is_main & (cos >= FRACTION_COS))[None, :] & (proj > 0)
    absorbers = torch.where(cand, proj, 0.0).topk(min(MAX_ABSORBERS, a.shape[1]), dim=1).values.sum(1)
    absorbed = torch.minimum(absorbers, total - main_sum)
    frac = (absorbed / (absorbed + main_sum)).clamp(0.0, 1.0)
    frac = torch.where(main_sum <= 0, 1.0, frac)
    none = (main_sum >= total) | (absorbers / total < PROJ_PROPORTION)
    frac = torch.where(none, 0.0, frac)
    top_val, top_i = proj.max(dim=1)
    full = (
        (a[:, is_main].abs() < EPS).all(1)
        & (cos[top_i] >= FULL_COS)
        & (total >= 0)
        & (top_val / total >= PROJ_PROPORTION)
    )
    return frac, full


@torch.no_grad()
def sae_absorption(sae: SAE, data: LetterData, min_words: int) -> dict[str, float]:
    """The absorption figures (:data:`KEYS`) of one SAE on ``data`` (a gradient-aware SAE is
    encoded as its β = 0 twin when ``data`` has no gradients)."""
    dev = sae.W_dec.device
    use_grad = sae.uses_grad and data.grads is not None
    if sae.uses_grad and not use_grad:
        sae = sae.gradient_free_twin() or sae  # β = 0: the zero gradient below changes nothing
    grads = data.grads if use_grad and data.grads is not None else torch.zeros_like(data.acts)
    grad = grads.to(dev) if sae.uses_grad else None
    out = sae(data.acts.to(dev), grad)
    idx, val, dense = out.indices.cpu(), out.values.float().cpu(), out.acts.float().cpu()
    w_dec = sae.W_dec.detach().float().cpu()
    mains = _split_latents(idx, val, dense, data, sae.d_sae)
    te = ~data.train
    x_te, a_te, y_te = data.acts[te], dense[te], data.letters[te]
    scores = x_te @ data.probe_w.T + data.probe_b  # [T, 26]
    probe_f1 = f1_scores((scores > 0).T, (y_te[None, :] == torch.arange(len(LETTERS))[:, None]))
    rates, fulls, splits = [], [], []
    for c in range(len(LETTERS)):
        tp = (y_te == c) & (scores[:, c] > 0)
        if probe_f1[c] < MIN_PROBE_F1 or int(tp.sum()) < min_words:
            continue
        frac, full = _word_absorption(x_te[tp], a_te[tp], data.probe_w[c], w_dec, mains[c])
        rates.append(float(frac.mean()))
        fulls.append(float(full.float().mean()))
        splits.append(len(mains[c]))
    out = {"absorption_letters": float(len(rates)), "absorption_grad": float(use_grad)}
    if rates:  # no letter scored (a tiny model): the three figures are left out, not NaN
        out |= {
            "absorption_rate": float(np.mean(rates)),
            "absorption_full": float(np.mean(fulls)),
            "absorption_split_latents": float(np.mean(splits)),
        }
    return out


def absorption_metrics(
    lm: LoadedModel,
    entries: Sequence[tuple[str, SAE, int]],
    *,
    words: int,
    min_words: int,
    seed: int,
    grad: bool = False,
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """name → absorption figures for every (name, SAE, hook block); the LM runs once per block.
    ``grad``: gradient-aware SAEs select with the answer's gradient (else as their β = 0 twin)."""
    out: dict[str, dict[str, float]] = {}
    for block in sorted({b for _, _, b in entries}):
        t0 = time.perf_counter()
        here = [(n, s) for n, s, b in entries if b == block]
        data = collect(
            lm,
            block,
            words,
            seed=seed,
            with_grad=grad and any(s.uses_grad for _, s in here),
            batch_size=batch_size,
        )
        t1 = time.perf_counter()
        for name, sae in here:
            out[name] = sae_absorption(sae, data, min_words)
        log.info(
            "absorption at block %d: %d words, prompts %.1f s, %d SAEs %.1f s",
            block,
            words,
            t1 - t0,
            len(here),
            time.perf_counter() - t1,
        )
    return out
