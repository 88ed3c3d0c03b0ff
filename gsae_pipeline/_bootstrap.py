"""Load the project's own ``cache`` and ``pipeline`` packages by location, whatever ``sys.path`` holds.

The library lives in top-level packages with common names (``pipeline``, ``cache``). Python
puts the running script's folder (a notebook's folder, ``''`` for ``python -c``) first on
``sys.path``, so a ``pipeline.py`` or ``cache/`` there would be found instead of ours and
``import pipeline.saes.io`` would fail in confusing ways. :func:`load_project_packages` runs
when :mod:`gsae_pipeline` is imported, before anything else of the project: it loads each
package from the folder beside ``gsae_pipeline/`` (a wheel installs them side by side in
site-packages; a checkout or an editable install has them side by side in the repository)
into ``sys.modules``, so every later ``import pipeline...`` / ``import cache...`` resolves
to ours. A module of that name imported earlier from anywhere else is refused with one line
naming its file. The price: after ``import gsae_pipeline``, ``import pipeline`` gives this
project's package, never a same-named module of the user's.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
"""The folder holding ``gsae_pipeline/`` and, beside it, the project's packages."""
PACKAGES = ("cache", "pipeline")
"""The project packages the API uses (``stages``, the CLI, is never imported by it)."""


class ShadowedPackageError(ImportError):
    """A foreign module already occupies the name of one of the project's packages.

    The one error of the project that is not a ``PipelineError``: it is raised exactly when
    the package defining ``PipelineError`` (``cache``) may be the one that cannot be loaded.
    """


def _locations(module: ModuleType) -> list[str]:
    """Where a module was loaded from: a package's folders, else its file (or its repr)."""
    found = [str(p) for p in (getattr(module, "__path__", None) or [])]
    return found or [str(getattr(module, "__file__", None) or module)]


def _is_ours(module: ModuleType, folder: Path) -> bool:
    return any(Path(p).resolve() == folder for p in getattr(module, "__path__", None) or [])


def _load(name: str) -> ModuleType:
    folder = (ROOT / name).resolve()
    present = sys.modules.get(name)
    if present is not None:
        if _is_ours(present, folder):
            return present
        where = " ".join(_locations(present))
        raise ShadowedPackageError(
            f"gsae_pipeline needs its own package {name!r} ({folder}), but a module named {name!r} is "
            f"already imported from {where}: rename that file or folder, or restart the interpreter "
            "and import gsae_pipeline before it"
        )
    init = folder / "__init__.py"
    if not init.is_file():
        raise ImportError(f"gsae_pipeline is installed without its package {name!r} (no {init})")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:  # pragma: no cover - a readable __init__.py always has one
        raise ImportError(f"cannot load {init}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_project_packages() -> None:
    """Put this installation's ``cache`` and ``pipeline`` packages into ``sys.modules`` (idempotent);
    ``ShadowedPackageError`` naming the file when another module already holds one of the names."""
    for name in PACKAGES:
        _load(name)
