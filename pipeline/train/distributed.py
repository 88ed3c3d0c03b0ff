"""Training on several processes under ``torchrun`` (``train.parallel``: ``variants`` | ``data``).

``torchrun --nproc_per_node=N --no-python gsae train`` starts N copies of the command;
:func:`setup` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) and joins the process group (gloo on CPU, NCCL on CUDA,
each rank on ``cuda:LOCAL_RANK``). Without that environment nothing is initialised and
training runs in one process exactly as before.

- ``variants``: rank r trains the variants ``specs[r::N]`` of the grid on the whole batch
  stream, which every rank reads from the store itself. Variants never interact, so each
  one's numbers are those of a one-process run, bit for bit on CPU at equal thread count.
  At the end each rank stages its own SAE folders, rank 0 moves them into place once all
  ranks succeeded, and rank 0 merges the gathered curve rows and metrics into the files a
  one-process run writes. Checkpoints: one folder per rank (``rank<r>-of-<N>``, the
  fingerprint names the rank's variants). Ranks never wait for each other before the end:
  each resumes its own variants from its own last checkpoint (or from the start), which
  gives the same numbers because variants do not interact. Resuming needs the same N.
- ``data``: every rank trains every variant on its contiguous slice of each global batch
  (every rank reads the global batch, then keeps its rows). Per-rank losses are the rank's
  share of the global-batch loss: the FVU denominators (Σ‖x − x̄‖² of x and of the AuxK
  residual) are all-reduced, so the summed gradient is the one-process gradient. Gradients
  are all-reduced (summed) before the decoder projection and Adam; the dead-latent counters
  and the logged statistics are reduced after each step, and the input scales and b_dec
  come from rank 0, so every rank holds the same weights (checked at the end). Rank 0
  writes the checkpoint, which is the one-process format (either can resume the other).

Figures (tests/train/test_distributed.py) and timings: docs/scaling.md "Training on several processes".
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as tdist

from pipeline.core.checkpoint import write_all_or_none
from pipeline.core.errors import ConfigError, OutputError

logger = logging.getLogger(__name__)

T = TypeVar("T")
_SUMMED = ("loss", "fvu", "aux", "grad_loss")
"""Per-rank shares of a global-batch figure: the global figure is their sum."""
_ROW_MEANS = ("l0", "selection_shift", "fo_loss_err")
"""Means over a rank's rows: weighted by its share of the rows, then summed."""


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the job (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    mode: str = "variants"
    owns_group: bool = False
    """Whether :func:`setup` initialised the process group (and :func:`teardown` ends it)."""

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def split_variants(self) -> bool:
        return self.active and self.mode == "variants"

    @property
    def split_rows(self) -> bool:
        return self.active and self.mode == "data"


def setup(mode: str, device: torch.device) -> tuple[Dist, torch.device]:
    """Join torchrun's process group when its environment says ``WORLD_SIZE`` > 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not tdist.is_initialized():
        return Dist(mode=mode), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local if device.index is None else device.index)
        torch.cuda.set_device(device)
    owns = not tdist.is_initialized()
    if owns:
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ctx = Dist(tdist.get_rank(), tdist.get_world_size(), local, mode, owns)
    logger.info(
        "rank %d of %d (%s, train.parallel=%s) on %s", ctx.rank, ctx.world, tdist.get_backend(), mode, device
    )
    return ctx, device


def teardown(ctx: Dist) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if ctx.owns_group and tdist.is_initialized():
        tdist.destroy_process_group()


def my_share(ctx: Dist, specs: Sequence[T]) -> list[T]:
    """The variants this rank trains: all of them, or every N-th in ``variants`` mode."""
    if not ctx.split_variants:
        return list(specs)
    if len(specs) < ctx.world:
        raise ConfigError(
            f"train.parallel=variants: {ctx.world} processes but only {len(specs)} variant(s); "
            "start fewer processes or use train.parallel=data"
        )
    return list(specs[ctx.rank :: ctx.world])


def check_row_split(ctx: Dist, variants: Sequence[tuple[str, type]]) -> None:
    """``ConfigError`` when ``data`` mode would train a batch-level selection (BatchTopK and its
    kin, which keep a ``thresholds`` estimate): each rank would rank only its own rows, so the
    result would differ from one process's, not only by float rounding."""
    if not ctx.split_rows:
        return
    batch_level = [name for name, cls in variants if getattr(cls, "thresholds", ())]
    if batch_level:
        more = f" and {len(batch_level) - 1} more" if len(batch_level) > 1 else ""
        raise ConfigError(
            f"train.parallel=data: {batch_level[0]}{more} select over the whole batch, which the "
            "processes would rank separately; use train.parallel=variants or one process"
        )


def gather(ctx: Dist, obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    if not ctx.active:
        return [obj]
    out: list[Any] = [None] * ctx.world
    tdist.all_gather_object(out, obj)
    return out


def from_main(ctx: Dist, obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.active:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: Dist) -> None:
    if ctx.active:
        tdist.barrier()


def agree_on_resume(ctx: Dist, state: dict[str, Any] | None) -> dict[str, Any] | None:
    """``state`` when every rank read a checkpoint of the same step, else ``None`` everywhere (``data`` mode)."""
    steps = gather(ctx, None if state is None else int(state["trainer"]["step"]))
    if len(set(steps)) == 1:
        return state
    logger.warning("the ranks' checkpoints are at different steps (%s); training from the start", steps)
    return None


def checkpoint_folder(ctx: Dist, base: Path) -> Path | None:
    """Where this rank writes checkpoints: ``None`` = it does not (``data`` mode, rank > 0)."""
    if ctx.split_variants:
        return base / f"rank{ctx.rank}-of-{ctx.world}"
    return base if ctx.main else None


def read_folder(ctx: Dist, base: Path) -> Path:
    """Where this rank reads its checkpoint from (rank 0's in ``data`` mode)."""
    return checkpoint_folder(ctx, base) or base


def write_variants(ctx: Dist, out_dir: Path, writes: Sequence[tuple[str, Callable[[Path], Any]]]) -> None:
    """All-or-none SAE output across ranks (see module doc)."""
    if not ctx.split_variants:
        if ctx.main:
            write_all_or_none(out_dir, writes)
        barrier(ctx)
        return
    mine = out_dir / f".rank{ctx.rank}"
    error = ""
    try:
        write_all_or_none(mine, writes)
    except OutputError as exc:
        error = str(exc)
    errors = [e for e in gather(ctx, error) if e]
    if errors:
        shutil.rmtree(mine, ignore_errors=True)
        raise OutputError(errors[0])
    names = gather(ctx, [n for n, _ in writes])
    if ctx.main:
        try:
            for rank, ranks_names in enumerate(names):
                for name in ranks_names:
                    target = out_dir / name
                    if target.exists():
                        shutil.rmtree(target)
                    os.replace(out_dir / f".rank{rank}" / name, target)
        except OSError as exc:
            raise OutputError(f"cannot move the trained SAEs into {out_dir}: {exc.strerror or exc}") from exc
        finally:
            for rank in range(ctx.world):
                shutil.rmtree(out_dir / f".rank{rank}", ignore_errors=True)
    barrier(ctx)


def _all_reduce(t: torch.Tensor, op: Any = None) -> torch.Tensor:
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM if op is None else op)
    return t


class DataParallel:
    """The hooks :class:`pipeline.train.trainer.Trainer` calls in ``data`` mode (one instance per run)."""

    def __init__(self, ctx: Dist) -> None:
        self.ctx = ctx
        self.global_rows = 0
        self._denoms: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def split(
        self, batches: Iterator[tuple[torch.Tensor, torch.Tensor | None]]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """This rank's contiguous rows of each global batch (sizes differ by at most one)."""
        try:
            for act, grad in batches:
                n = act.shape[0]
                if n < self.ctx.world:
                    raise ConfigError(
                        f"train.parallel=data: a batch of {n} rows cannot feed {self.ctx.world} processes"
                    )
                lo, hi = n * self.ctx.rank // self.ctx.world, n * (self.ctx.rank + 1) // self.ctx.world
                self.global_rows = n
                yield act[lo:hi], None if grad is None else grad[lo:hi]
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def _denom(self, x: torch.Tensor) -> torch.Tensor:
        """Σ‖x − x̄‖² over the global batch (x̄ its global mean); x needs no gradient."""
        key = id(x)
        hit = self._denoms.get(key)
        if hit is not None and hit[0] is x:
            self._denoms.move_to_end(key)
            return hit[1]
        with torch.no_grad():
            mean = _all_reduce(x.sum(dim=0)) / self.global_rows
            denom = _all_reduce((x - mean).pow(2).sum()).clamp_min(1e-12)
        self._denoms[key] = (x, denom)
        while len(self._denoms) > 2:  # the step's x and the latest AuxK residual
            self._denoms.popitem(last=False)
        return denom

    def fvu(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """This rank's share of the global-batch FVU (the shares sum to it)."""
        return (x - x_hat).pow(2).sum() / self._denom(x)

    def share(self, x: torch.Tensor, numerator: torch.Tensor) -> torch.Tensor:
        """This rank's ``numerator`` over the global batch's Σ‖x − x̄‖² (the gradient loss term)."""
        return numerator / self._denom(x)

    def all_reduce_grads(self, module: torch.nn.Module) -> None:
        """Sum the parameter gradients over ranks (one flat all-reduce)."""
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = _all_reduce(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def after_step(
        self, since_fired: torch.Tensor, stats: dict[str, float], local_rows: int
    ) -> dict[str, float]:
        """Global dead-latent counters and global-batch statistics after a variant's step."""
        # A latent fired on some rank has 0 there; elsewhere every rank holds old + its rows.
        _all_reduce(since_fired, tdist.ReduceOp.MIN)
        fewest = self.global_rows // self.ctx.world
        since_fired[since_fired > 0] += self.global_rows - fewest
        share = local_rows / self.global_rows
        keys = [k for k in (*_SUMMED, *_ROW_MEANS) if k in stats]
        dev = since_fired.device
        vals = torch.stack(
            [
                torch.as_tensor(stats[k], dtype=torch.float64, device=dev)
                * (share if k in _ROW_MEANS else 1.0)
                for k in keys
            ]
        )
        _all_reduce(vals)
        # floats in, floats out; 0-d tensors (no host sync per step) in, tensors out
        total = list(vals.unbind()) if isinstance(stats[keys[0]], torch.Tensor) else vals.tolist()
        return {**stats, **dict(zip(keys, total, strict=True))}

    def check_same_weights(self, modules: dict[str, torch.nn.Module]) -> None:
        """``RuntimeError`` unless every rank holds bit-identical parameters."""
        sums = {
            name: [
                float(p.detach().double().abs().sum()) + float(p.detach().double().sum())
                for p in m.parameters()
            ]
            for name, m in sorted(modules.items())
        }
        seen = gather(self.ctx, sums)
        if any(s != seen[0] for s in seen):
            raise RuntimeError(
                "train.parallel=data: the ranks' weights diverged (a nondeterministic collective?)"
            )
