"""Progress lines on stderr with ``-v``; stdout carries only the result (or, in a
child, the JSON-lines protocol)."""

from __future__ import annotations

import sys
import time


class _Progress:
    verbose = False


def set_verbose(verbose: bool) -> None:
    """Set once, before anything runs; children are told with ``-v``."""
    _Progress.verbose = verbose


def verbose() -> bool:
    return _Progress.verbose


def say(*parts: object) -> None:
    if _Progress.verbose:
        print(f"[{time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)
