"""Process-wide memory settings for the ``serve`` command (a process the command owns, never a library call).

glibc gives each thread that allocates its own malloc arena (up to 8 per core). A server's request threads
(the executor threads that decode audio and compute features) come and go with the load, and every new one
grows the resident memory by the arena it touches, so RSS steps up whenever concurrency reaches a new peak
(benchmarks/README.md, "Soak": +9 MB after the first 1,000 requests with glibc's default, +0.9% with two
arenas). ``serve`` caps the arenas before any thread starts, as ``MALLOC_ARENA_MAX`` would.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter for the most malloc arenas (malloc.h)."""
DEFAULT_ARENAS = 2


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` unless ``MALLOC_ARENA_MAX`` already says how many.

    Returns whether the cap is in force (False off glibc, or when the environment decides)."""
    if arenas < 1:
        raise ValueError(f"arenas must be >= 1, got {arenas}")
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 -- present only in glibc
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, arenas) != 1:
        return False
    logger.info("malloc arenas capped at %d", arenas)
    return True
