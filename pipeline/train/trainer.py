"""Training many SAE variants on one stream of (act, grad) batches.

Every batch is fed to every variant; each variant has its own parameters, Adam optimizer,
learning-rate schedule and dead-latent counters. Per step and variant (all in the scaled
space of :mod:`pipeline.train.normalize`: x = act × act_scale, g = raw grad, the SAE multiplies g by
its ``grad_scale``):

- loss = Σ_r FVU_batch(x̂_r, x) + λ · grad_loss + aux_coef · AuxK (:mod:`pipeline.train.losses`):
  FVU_batch = Σ‖x − x̂‖² / Σ‖x − x̄‖² (Gao et al.) over :meth:`~pipeline.saes.base.SAE.nested_decodes`
  (x̂, or every Matryoshka prefix); grad_loss = Σ(g̃ · (x − x̂))² / Σ‖x − x̄‖², g̃ = g × grad_scale,
  with the variant's λ (``train.grid.grad_loss``; 0: not computed), logged when λ > 0; AuxK
  reconstructs the detached residual x − x̂ from the top ``k_aux`` ReLU(z) among dead latents
  (decoder without bias), normalised the same way, 0 while no latent is dead.
- a latent is dead when it has not been selected with a positive value for
  ``dead_tokens`` tokens; the dead fraction reported in curves uses the window
  min(dead_tokens, tokens seen).
- lr = base · min(1, (step+1)/warmup_steps) · decay, decay falling linearly to 0 over the
  last ``decay_fraction`` of steps.
- gradient-aware variants also log ``selection_shift``, the fraction of their selected
  latents outside their own β = 0 selection of z (what the gradient changed;
  :meth:`~pipeline.saes.base.SAE.selection_changes`).
- ``fo_loss_err`` (batches with gradients, every architecture): mean over the rows of
  |g · (x − x̂)| in raw units (g the stored gradient of the context's summed loss), the
  first-order loss change at each token when x̂ replaces x (nats; :mod:`pipeline.evaluate.metrics`);
  measured only on the step that ends a log window (``fit``'s ``log_every``), which the
  curve row gives.
- the decoder-gradient component parallel to each row is removed before Adam's step and
  the rows renormalised to unit norm after it.

Variants are trained in a Python loop: a stacked ``bmm`` takes the same time once the allocator
is tuned (:func:`stages.allocator.tune_allocator`; stacked/loop 1.01 on 2 CPU cores,
benchmarks/components/train_stage.py figure d). On the CPU the encoder's gradients come from
the sparse ∂L/∂z (:mod:`pipeline.saes.sparse_grad`) and AuxK runs over the dead latents'
columns only, skipped when none is dead: a TopK step (k32 x8, batch 4,096, 2 cores) is 1.49x
faster than the dense path, 2.38x with AuxK on (figure f); results equal it to float rounding.
``train.autocast: bfloat16``: the encoder's GEMMs in bf16 (:mod:`pipeline.train.precision`).

The trainer is deterministic on CPU given its inputs, and ``state_dict`` captures
everything (parameters, Adam state, counters, step, RNG, curve rows), so a run resumed
from a checkpoint and fed the same batches from the same step ends bit-identical.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from pipeline.core.config import TrainConfig
from pipeline.core.devices import autocast
from pipeline.saes.base import SAE
from pipeline.saes.sparse_grad import encoder_backward_
from pipeline.train.adam import FusedAdam
from pipeline.train.distributed import DataParallel
from pipeline.train.losses import batch_fvu, batch_share, downstream_sq
from pipeline.train.sweep import VariantSpec

logger = logging.getLogger(__name__)

LogFn = Callable[[int, int, dict[str, dict[str, float]]], None]
"""on_log(step, tokens_seen, {variant: {loss, fvu, l0, dead_frac, aux, lr[, selection_shift][, fo_loss_err][, grad_loss]}})."""
FO_COUNT = "_fo_steps"
"""Key in a variant's running sums counting the steps ``fo_loss_err`` was measured on."""
CheckpointFn = Callable[[int, "Trainer"], None]
"""on_checkpoint(step, trainer): persist ``trainer.state_dict()`` and the reader position."""


@dataclass
class Variant:
    """One SAE being trained, with its optimizer and running statistics."""

    spec: VariantSpec
    sae: SAE
    opt: FusedAdam
    since_fired: torch.Tensor
    """[n] int64 tokens since each latent last fired."""
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0


class Trainer:
    """Fits every spec in ``specs`` on the same batches for ``total_steps`` steps."""

    def __init__(
        self,
        specs: list[VariantSpec],
        d_in: int,
        cfg: TrainConfig,
        *,
        total_steps: int,
        act_scale: float = 1.0,
        grad_scale: float = 1.0,
        b_dec: torch.Tensor | None = None,
        device: str | torch.device = "cpu",
        parallel: DataParallel | None = None,
    ) -> None:
        self.cfg, self.d_in, self.total_steps = cfg, d_in, total_steps
        # data-parallel hooks (pipeline.train.distributed): global-batch FVU, gradient and counter sums
        self.parallel = parallel
        self._fvu = batch_fvu if parallel is None else parallel.fvu
        self._share = batch_share if parallel is None else parallel.share
        self.act_scale, self.grad_scale = float(act_scale), float(grad_scale)
        self.device = torch.device(device)
        # CPU: the encoder's gradients from the sparse ∂L/∂z (pipeline.saes.sparse_grad, ~1.4x
        # the step rate); CUDA keeps autograd's dense GEMM, the path measured there.
        self.sparse_encoder_grad = self.device.type == "cpu"
        self.k_aux = cfg.k_aux if cfg.k_aux is not None else d_in // 2
        self.step, self.tokens = 0, 0
        self.curve: list[dict[str, Any]] = []
        self.variants: dict[str, Variant] = {}
        for spec in specs:
            gen = torch.Generator().manual_seed(spec.seed)
            sae = spec.sae_class.from_hparams(d_in, spec.d_sae(d_in), spec.hparams, grad_scale=grad_scale)
            sae.reset_parameters(gen)
            if b_dec is not None:
                with torch.no_grad():
                    sae.b_dec.copy_(b_dec)
            sae.to(self.device).train()
            opt = FusedAdam(sae.parameters(), lr=spec.lr, betas=(0.9, 0.999), eps=6.25e-10)
            since = torch.zeros(sae.d_sae, dtype=torch.int64, device=self.device)
            self.variants[spec.name] = Variant(spec, sae, opt, since)

    # ------------------------------------------------------------------ schedule

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base lr at ``step`` (warm-up, then constant, then linear decay)."""
        warm = min(1.0, (step + 1) / self.cfg.warmup_steps) if self.cfg.warmup_steps > 0 else 1.0
        decay_steps = int(self.total_steps * self.cfg.decay_fraction)
        start = self.total_steps - decay_steps
        decay = 1.0 if decay_steps == 0 or step < start else max(0.0, (self.total_steps - step) / decay_steps)
        return warm * decay

    # ------------------------------------------------------------------ one step

    def _variant_step(
        self,
        v: Variant,
        x: torch.Tensor,
        g: torch.Tensor | None,
        lr_factor: float,
        fo_grad: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """One step of one variant; ``fo_grad`` (the raw gradient, on measuring steps only) adds
        ``fo_loss_err`` to the statistics."""
        sae, lam = v.sae, v.spec.grad_loss
        if (sae.uses_grad or lam > 0) and g is None:
            why = f"{sae.architecture} selects" if sae.uses_grad else f"grad_loss={lam:g} weighs the loss"
            raise ValueError(f"variant {v.spec.name}: {why} with the loss gradient, and the batch has none")
        g_sel = g if sae.uses_grad else None
        # CPU: the values are the leaves, ∂L/∂z is never built densely; z is float32 (train.precision)
        grad_mode = torch.no_grad() if self.sparse_encoder_grad else nullcontext()
        with grad_mode, autocast(self.device, self.cfg.autocast):
            z = sae.encode_pre(x)
            indices, values = sae.select(z, g_sel)
        if self.sparse_encoder_grad:
            values.requires_grad_(True)
        *inner, x_hat = sae.nested_decodes(indices, values)
        fvu = self._fvu(x, x_hat)
        rec = sum((self._fvu(x, prefix) for prefix in inner), fvu)  # flat: fvu itself, bit for bit
        grad_loss = (
            None if g is None or lam == 0 else self._share(x, downstream_sq(x, x_hat, g * sae.grad_scale))
        )
        if grad_loss is not None:
            rec = rec + lam * grad_loss
        aux, aux_indices, aux_values = self._aux_loss(v, z, (x - x_hat).detach())
        loss = rec + self.cfg.aux_coef * aux if aux is not None else rec
        v.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.sparse_encoder_grad:
            self._encoder_backward(sae, x, z, (indices, values), (aux_indices, aux_values))
        if self.parallel is not None:
            self.parallel.all_reduce_grads(sae)
        sae.remove_parallel_grad_()
        lr = v.spec.lr * lr_factor
        for group in v.opt.param_groups:
            group["lr"] = lr
        v.opt.step()
        sae.normalize_decoder_()
        with torch.no_grad():
            fires = (values > 0).flatten()
            self._update_dead_counters(v, indices.flatten(), fires, x.shape[0])
            # float64 tensors on the device: no host sync per step; summed they equal the
            # Python-float sums of earlier versions bit for bit.
            stats: dict[str, Any] = {
                "loss": loss.detach().double(),
                "fvu": fvu.detach().double(),
                "aux": aux.detach().double()
                if aux is not None
                else torch.zeros((), dtype=torch.float64, device=x.device),
                "l0": fires.sum().double() / x.shape[0],
                "lr": lr,
            }
            if grad_loss is not None:
                stats["grad_loss"] = grad_loss.detach().double()
            if sae.uses_grad:
                stats["selection_shift"] = sae.selection_shift(z.detach(), indices, values.detach())
            if fo_grad is not None:  # one [B, d] product: x, x̂ scaled by act_scale, g raw
                fo = ((x - x_hat.detach()) * fo_grad).sum(dim=1).abs().mean()
                stats["fo_loss_err"] = fo.double() / self.act_scale
        return stats

    @staticmethod
    def _encoder_backward(
        sae: SAE,
        x: torch.Tensor,
        z: torch.Tensor,
        selected: tuple[torch.Tensor, torch.Tensor],
        aux: tuple[torch.Tensor | None, torch.Tensor | None],
    ) -> None:
        """The encoder's gradients from the leaf values' gradients (CPU, sparse path): the selected
        values through :meth:`~pipeline.saes.base.SAE.value_slope`, AuxK's ReLU(z) through 1[z > 0]."""
        indices, values = selected
        assert values.grad is not None
        entries = [(indices, values.grad * sae.value_slope(z.gather(1, indices), values.detach()))]
        aux_indices, aux_values = aux
        if aux_indices is not None and aux_values is not None and aux_values.grad is not None:
            entries.append((aux_indices, aux_values.grad * (aux_values.detach() > 0)))
        encoder_backward_(sae, x, entries)

    def _aux_loss(
        self, v: Variant, z: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(AuxK loss of the dead latents, the latents it used [B, ≤ k_aux], their values), or
        Nones when no latent can be dead yet.

        On CUDA without a host sync: the top ``k_aux`` of z over dead latents only (the others
        masked to −inf, which ReLU turns into zero weights), zeroed when none is dead. On the
        CPU, where reading the dead count costs nothing, the top-k runs over the dead latents'
        columns only and is skipped when none is dead (the loss and gradients it would add are
        exact zeros); its values ReLU(z) are then a leaf of the sparse encoder gradient. No latent
        can be dead before ``dead_tokens`` tokens were seen, so the topk is skipped until then.
        """
        if self.k_aux <= 0 or self.cfg.aux_coef <= 0 or self.tokens < self.cfg.dead_tokens:
            return None, None, None
        dead = v.since_fired >= self.cfg.dead_tokens
        if self.sparse_encoder_grad:
            dead_latents = torch.nonzero(dead).flatten()
            if dead_latents.numel() == 0:
                return None, None, None
            with torch.no_grad():
                top = torch.topk(
                    z[:, dead_latents], min(self.k_aux, dead_latents.numel()), dim=-1, sorted=False
                )
                indices, values = dead_latents[top.indices], torch.relu(top.values)
            values.requires_grad_(True)
            e_hat = v.sae.decode_sparse(indices, values, bias=False)
            return torch.nan_to_num(self._fvu(residual, e_hat), nan=0.0), indices, values
        top = torch.topk(
            z.masked_fill(~dead, float("-inf")), min(self.k_aux, v.sae.d_sae), dim=-1, sorted=False
        )
        values = torch.relu(top.values)
        e_hat = v.sae.decode_sparse(top.indices, values, bias=False)
        return torch.nan_to_num(self._fvu(residual, e_hat), nan=0.0) * dead.any(), top.indices, values

    @staticmethod
    def _update_dead_counters(v: Variant, indices: torch.Tensor, fires: torch.Tensor, n_tokens: int) -> None:
        """Reset the counter of every latent selected with a positive value; age the others."""
        hits = torch.zeros(v.sae.d_sae, dtype=torch.int32, device=indices.device)
        hits.index_add_(0, indices, fires.to(torch.int32))
        v.since_fired += n_tokens
        v.since_fired.masked_fill_(hits > 0, 0)

    def train_step(
        self, act: torch.Tensor, grad: torch.Tensor | None, *, measure_fo: bool = False
    ) -> dict[str, dict[str, Any]]:
        """One optimizer step of every variant on raw act [B, d], grad [B, d] (``None`` from an
        activation-only store: only gradient-free architectures can train on it).

        ``measure_fo``: also measure every variant's ``fo_loss_err`` on this batch (when it
        carries gradients); :meth:`fit` asks for it on the last step of each log window.

        Returns the step's statistics per variant as 0-d float64 tensors on the trainer's
        device (``lr`` is a float); reading one with ``float()`` waits for the device.
        """
        # Copy in the stored dtype (half the bytes of float32), convert on the device.
        x = act.to(self.device, non_blocking=True).float() * self.act_scale
        g = None if grad is None else grad.to(self.device, non_blocking=True).float()
        factor = self.lr_factor(self.step)
        fo_grad = g if measure_fo else None
        out = {}
        for name, v in self.variants.items():
            stats = self._variant_step(v, x, g, factor, fo_grad)
            if self.parallel is not None:
                stats = self.parallel.after_step(v.since_fired, stats, x.shape[0])
            for key, val in stats.items():
                v.sums[key] = v.sums.get(key, 0.0) + val
            if "fo_loss_err" in stats:  # measured on some steps only: its own count
                v.sums[FO_COUNT] = v.sums.get(FO_COUNT, 0.0) + 1.0
            v.count += 1
            out[name] = stats
        self.step += 1
        self.tokens += x.shape[0] if self.parallel is None else self.parallel.global_rows
        return out

    # ------------------------------------------------------------------ loop

    def dead_fraction(self, name: str) -> float:
        """Fraction of latents not fired within min(dead_tokens, tokens seen) tokens."""
        v = self.variants[name]
        window = max(1, min(self.cfg.dead_tokens, self.tokens))
        return float((v.since_fired >= window).float().mean())

    def flush_log(self) -> dict[str, dict[str, float]]:
        """Mean statistics since the last flush, per variant; also appended to ``curve``."""
        out: dict[str, dict[str, float]] = {}
        for name, v in self.variants.items():
            if v.count == 0:
                continue
            sums = dict(v.sums)
            fo_sum, fo_n = sums.pop("fo_loss_err", None), sums.pop(FO_COUNT, None)
            stats = {key: float(val) / v.count for key, val in sums.items()}
            if fo_sum is not None and fo_n:
                stats["fo_loss_err"] = float(fo_sum) / float(fo_n)
            stats["dead_frac"] = self.dead_fraction(name)
            out[name] = stats
            self.curve.append({"variant": name, "step": self.step, "tokens": self.tokens, **stats})
            v.sums, v.count = {}, 0
        return out

    def fit(
        self,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
        *,
        log_every: int = 10,
        checkpoint_every: int = 0,
        on_log: LogFn | None = None,
        on_checkpoint: CheckpointFn | None = None,
        progress: bool = True,
    ) -> None:
        """Consume ``batches`` until ``total_steps`` (starting from the current ``step``)."""
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", disable=not progress)
        it = iter(batches)
        try:
            while self.step < self.total_steps:
                try:
                    act, grad = next(it)
                except StopIteration:
                    logger.warning("batch stream ended at step %d of %d", self.step, self.total_steps)
                    break
                ends_window = log_every > 0 and (
                    (self.step + 1) % log_every == 0 or self.step + 1 == self.total_steps
                )
                self.train_step(act, grad, measure_fo=ends_window)
                bar.update(1)
                last = self.step == self.total_steps
                if log_every > 0 and (self.step % log_every == 0 or last):
                    stats = self.flush_log()
                    if on_log is not None:
                        on_log(self.step, self.tokens, stats)
                if (
                    on_checkpoint is not None
                    and checkpoint_every > 0
                    and self.step % checkpoint_every == 0
                    and not last
                ):
                    on_checkpoint(self.step, self)
        finally:
            bar.close()
            close = getattr(it, "close", None)
            if close is not None:
                close()

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically."""
        return {
            "step": self.step,
            "tokens": self.tokens,
            "act_scale": self.act_scale,
            "grad_scale": self.grad_scale,
            "curve": list(self.curve),
            "rng": torch.get_rng_state(),
            "variants": {
                name: {
                    "model": v.sae.state_dict(),
                    "opt": v.opt.state_dict(),
                    "since_fired": v.since_fired.clone(),
                    "sums": {key: float(val) for key, val in v.sums.items()},
                    "count": v.count,
                }
                for name, v in self.variants.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (same specs and shapes)."""
        missing = set(self.variants) ^ set(state["variants"])
        if missing:
            raise ValueError(f"checkpoint variants differ: {sorted(missing)}")
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.act_scale, self.grad_scale = float(state["act_scale"]), float(state["grad_scale"])
        self.curve = list(state["curve"])
        torch.set_rng_state(state["rng"])
        for name, v in self.variants.items():
            s = state["variants"][name]
            v.sae.load_state_dict(s["model"])
            v.sae.grad_scale = self.grad_scale
            v.opt.load_state_dict(s["opt"])
            v.since_fired.copy_(s["since_fired"])
            v.sums, v.count = dict(s["sums"]), int(s["count"])
