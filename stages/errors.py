"""How a ``gsae`` command that failed reports it: one line on stderr and an exit code.

A :class:`~pipeline.core.errors.PipelineError` is bad input or a bad environment that the
library recognised: ``gsae: error: ...``, exit 1. An ``OSError`` that reached the top names its
file: ``gsae: error: <reason>: <file>``, exit 1. Anything else is a bug: ``gsae: unexpected
<type>: ...`` with a pointer to ``--debug`` (which shows the traceback), exit 2.
"""

from __future__ import annotations

from pipeline.core.errors import PipelineError

DEBUG_HINT = "gsae --debug ... shows the traceback"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def error_line(exc: Exception) -> tuple[str, int]:
    """(the line to print, the exit code) for ``exc``."""
    if isinstance(exc, PipelineError):
        return f"gsae: error: {_first_line(exc)}", 1
    if isinstance(exc, OSError) and exc.filename is not None:
        reason = exc.strerror or _first_line(exc)
        return f"gsae: error: {reason}: {exc.filename}", 1
    return f"gsae: unexpected {type(exc).__name__}: {_first_line(exc)} ({DEBUG_HINT})", 2
