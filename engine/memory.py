"""Process-wide memory settings for the ``serve`` command, and returning freed memory to the system.

glibc gives each thread that allocates its own malloc arena (up to 8 per core). A server's request threads
(the executor threads that decode audio and compute features) come and go with the load, and every new one
grows the resident memory by the arena it touches, so RSS steps up whenever concurrency reaches a new peak
(benchmarks/README.md, "Soak": +9 MB after the first 1,000 requests with glibc's default, +0.9% with two
arenas). ``serve`` caps the arenas before any thread starts, as ``MALLOC_ARENA_MAX`` would (a process the command
owns, never a library call).

glibc also keeps part of what a program frees in its heaps, and :func:`release_free_memory` hands those free
pages back (glibc's ``malloc_trim(0)``):

- ``Engine.load`` calls it once at its end. Loading reads and rewrites graphs (the decoding graphs' int8 weights
  are made at load), and glibc kept about 580 MB of those transient buffers resident after loading the v3-shaped
  int8 directory: with the trim (about 9 ms) it holds 1.15 GB after loading instead of 1.9 GB, and peaks at 1.6 GB
  instead of 2.3 GB over 60 s requests, the graph bytes ONNX Runtime no longer keeps included
  (``onnx_model._forget_graph_bytes``; AMD EPYC Zen 4, 2026-12-04; benchmarks/README.md, "Memory after loading").
- A large request (minutes of audio: ~1 GB at its peak for 230 s of 44.1 kHz stereo) frees its buffers when it
  ends; the server trims after large or failed requests, in a worker thread, at most once a second (after a
  failure, with a cycle collection first). Over four such requests (two refused late, after decoding and
  features) a ``serve`` process grew by 82 MB without the trim and by 45 MB with it (benchmarks/README.md,
  "Abuse").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import threading

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter for the most malloc arenas (malloc.h)."""
DEFAULT_ARENAS = 2


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 -- present only in glibc
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` unless ``MALLOC_ARENA_MAX`` already says how many.

    Returns whether the cap is in force (False off glibc, or when the environment decides)."""
    if arenas < 1:
        raise ValueError(f"arenas must be >= 1, got {arenas}")
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, arenas) != 1:
        return False
    logger.info("malloc arenas capped at %d", arenas)
    return True


_trimming = threading.Lock()


def release_free_memory() -> bool:
    """Return the free memory of glibc's malloc heaps to the system (``malloc_trim(0)``).

    It can take a few hundred milliseconds on a fragmented heap, so call it from a worker thread. Calls that
    overlap a running one return at once. Returns whether a trim ran (False off glibc, or while another runs)."""
    libc = _glibc()
    if libc is None or not _trimming.acquire(blocking=False):
        return False
    try:
        libc.malloc_trim(0)
    finally:
        _trimming.release()
    return True
