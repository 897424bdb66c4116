"""Keeping a long-running daemon's heap small (glibc only; elsewhere these do nothing).

Hand-written with ctypes because no maintained library exposes glibc's mallopt() and
malloc_trim(), and they are two calls."""

from __future__ import annotations

import ctypes
from typing import Any

# glibc mallopt() parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def _libc_function(name: str) -> Any | None:
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None


def limit_heap_growth() -> None:
    """Keep the heap from holding on to memory it has freed.

    glibc raises its mmap threshold each time a large block is freed, after which feature
    matrices, spectra and the grammar build's temporaries come from the heap and stay resident
    once freed (~3 MB here); and each thread that allocates gets its own arena. A fixed
    threshold (mmapped blocks go back to the system on free) and two arenas avoid both."""
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
        mallopt(_M_ARENA_MAX, 2)


def return_freed_heap() -> None:
    """Hand the heap's free pages back to the system (malloc_trim).

    A released TFLite interpreter frees its arenas in the middle of the heap, where glibc
    keeps them resident: without this, a model bucket that was let go still costs its MB."""
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)
