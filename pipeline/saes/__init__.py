"""SAE architectures and their registry (name → class, each class carrying its hparams class).

Adding an architecture = one file that declares a frozen hyper-parameter dataclass
(subclass of :class:`~pipeline.saes.base.KHParams`, one docstring per field) and a subclass of
:class:`~pipeline.saes.base.SAE`, decorates the class with ``@register("name", HParams)`` and
is imported below (SAELens's pattern: name → (SAE class, config class)). Everything else
reads the registry: the sweep (:mod:`pipeline.train.sweep`: an hparams field named like a
``train.grid`` key is varied by it, the others keep their defaults), variant names and
series labels (:mod:`pipeline.saes.naming`), ``cfg.json`` and
:func:`pipeline.saes.io.load_sae`, and the CLI's ``-a`` choices. Files:
:mod:`pipeline.saes.io` (SAELens 6 layout), :mod:`pipeline.saes.saelens_plugin` (the ``gsae``
architecture for SAELens; imports ``sae_lens``), :mod:`pipeline.saes.export` (sparsify), :mod:`pipeline.saes.registry` (the registry itself),
:mod:`pipeline.saes.naming` (variant, series and table names from the registered hyper-parameters).

Rule (tests/test_layout.py): ``saes`` imports only ``core``; every stage and the report may
import it. ``from pipeline.saes import ...`` stays the public path (SAELens plug-in included).
"""

from __future__ import annotations

# Importing the modules registers the built-in architectures.
from pipeline.saes import batchtopk as _batchtopk  # noqa: F401
from pipeline.saes import gbatchtopk as _gbatchtopk  # noqa: F401
from pipeline.saes import gmatryoshka as _gmatryoshka  # noqa: F401
from pipeline.saes import gsae as _gsae  # noqa: F401
from pipeline.saes import matryoshka as _matryoshka  # noqa: F401
from pipeline.saes import topk as _topk  # noqa: F401
from pipeline.saes.base import SAE, KHParams, SAEOutput
from pipeline.saes.registry import GRID_KEYS, REGISTRY, get_sae_class, register

__all__ = ["GRID_KEYS", "REGISTRY", "SAE", "KHParams", "SAEOutput", "get_sae_class", "register"]
