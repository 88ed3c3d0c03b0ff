"""The data one described entry hands to its writers: every firing, and the token table.

A *firing* is one (latent, row) pair where the SAE, applied as evaluation applies it, gives
the decoder a nonzero value. :class:`Firings` holds all of them for one entry, grouped by
latent (CSR), so the browser can show any latent's activation on any token of a context and
notebooks can recompute any figure of ``latents.json``. :class:`TokenTable` holds the
described rows' token ids and the text of each id (untrusted: escaped wherever shown).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Firings:
    """Every firing of every latent of one entry on the described rows, grouped by latent.

    Latent i's firings are ``[offsets[i], offsets[i + 1])`` of the flat arrays, by activation
    descending (ties by row ascending).
    """

    offsets: np.ndarray
    """int64 [n_latents + 1]."""
    rows: np.ndarray
    """int64 [F] absolute store rows."""
    acts: np.ndarray
    """float32 [F] the value the decoder receives (> 0)."""
    attrs: np.ndarray | None
    """float32 [F] −act · (W_dec[i] · g_row) with the raw stored gradient; None without gradients."""
    added: np.ndarray | None
    """bool [F]: the firing is not in the gradient-free (β = 0) selection of the same SAE —
    the gradient added it. Only for gradient-aware entries read with the gradient, else None."""

    @property
    def n_latents(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def of(self, latent: int) -> slice:
        """The flat-array slice of ``latent``'s firings."""
        return slice(int(self.offsets[latent]), int(self.offsets[latent + 1]))


@dataclass(frozen=True)
class TokenTable:
    """The described rows' tokens: ``ids[r - first_row]`` is the token at store row r."""

    first_row: int
    """Store row of ``ids[0]`` (the first position of a context)."""
    context_length: int
    """T: row r is position r mod T of context r div T."""
    ids: np.ndarray
    """int32 [n_rows] token ids (whole contexts)."""
    strings: dict[int, str]
    """Decoded text of every id in ``ids`` and in the logit lists (untrusted)."""

    def context_span(self, row: int) -> tuple[int, int]:
        """[start, stop) store rows of the context holding ``row``."""
        start = row - row % self.context_length
        return start, start + self.context_length
