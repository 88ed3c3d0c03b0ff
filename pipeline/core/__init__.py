"""The shared ground floor: typed config and its one loader, errors, atomic file I/O, devices, hub access.

Modules: :mod:`~pipeline.core.config` (one frozen dataclass per params.yaml section),
:mod:`~pipeline.core.loader` (params.yaml + ``-s`` overrides → :class:`~pipeline.core.config.Params`),
:mod:`~pipeline.core.errors`, :mod:`~pipeline.core.fileio`, :mod:`~pipeline.core.devices`,
:mod:`~pipeline.core.hub`.

Rule (tests/test_layout.py): ``core`` imports no other folder of ``pipeline`` — every stage may
import it, it imports none of them.
"""
