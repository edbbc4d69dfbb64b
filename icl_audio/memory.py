"""The process's CPU memory: how glibc's malloc keeps and returns freed memory.

Process-wide settings, so library code never makes them on its own: the CLI opts in (API users may
too) by calling :func:`keep_freed_memory` once at start-up. Both are no-ops outside Linux/glibc and
with ``ICL_AUDIO_MALLOC=system``:

* :func:`keep_freed_memory` (the opt-in): freed blocks stay with the process, so the many large
  tensors of a forward pass are reused instead of page-faulted in again every pass.
* :func:`release_freed_memory` (at a change of stage, only once opted in): what the scorer kept is
  handed back before the codec encodes the next chunk. The codec (in its own worker threads, each with its own malloc
  arena, kept for the codec's lifetime) and the scorer (in the calling thread) take turns on every
  chunk of inputs, and memory kept by one cannot be reused by the other. The codec's workers keep
  theirs (they reuse it chunk after chunk; releasing it too made the peak vary by ~50 MB between
  chunks as they faulted it in again).
"""

from __future__ import annotations

import os
import sys

# glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

_kept = False  # keep_freed_memory took effect: this process opted in to the allocator settings


def _libc():
    """glibc, or None where the allocator is not glibc's or the user asked to leave it alone."""
    if sys.platform != "linux" or os.environ.get("ICL_AUDIO_MALLOC", "").strip().lower() == "system":
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist (musl has neither)
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the OS.

    A CPU forward pass allocates and frees hundreds of tensors of megabytes. By default glibc maps
    each large one fresh from the OS and unmaps it when freed, so every pass page-faults its whole
    working set in again: measured at the Llasa-1B shape, 240,000-320,000 page faults and 0.6-0.8 s
    of kernel time per 1,300-token forward (about 10% of it), for the codec too. With large blocks
    kept on the heap there are none. Memory is handed back at changes of stage
    (:func:`release_freed_memory`, which does nothing without this opt-in), so the peak is that of
    the largest stage. Called by the CLI; API users may call it once at start-up. Returns whether the
    setting took effect.
    """
    global _kept
    libc = _libc()
    if libc is None:
        return False
    import ctypes

    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # Largest values glibc accepts on 64-bit: blocks below 32 MB come from the heap (the largest
    # activations of a 1,300-token Llasa pass are ~22 MB), and the heap top is never trimmed.
    mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1
    trim_ok = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    # A worker thread's arena is a chain of 64 MB heaps, and glibc unmaps a heap as soon as its top
    # is free, whatever the trim threshold, unless that frees more than the top pad: without this,
    # the codec's workers unmapped and re-faulted their heaps within every batch, and the process's
    # peak varied by ~60 MB from one chunk of clips to the next (13 MB with it). Untouched pad pages
    # are address space, not memory.
    pad_ok = libc.mallopt(_M_TOP_PAD, 64 * 1024 * 1024) == 1
    _kept = mmap_ok and trim_ok and pad_ok
    return _kept


def allocator_tuned() -> bool:
    """Whether this process opted in with :func:`keep_freed_memory` (and the setting took effect)."""
    return _kept


def release_freed_memory() -> bool:
    """Hand memory that malloc holds free (in every thread's arena) back to the OS: ``malloc_trim(0)``,
    once the process opted in with :func:`keep_freed_memory` (otherwise nothing: glibc's own
    thresholds hand memory back, and the process's allocator is the caller's business).

    Called by :func:`icl_audio.encoding.stream_codes` before each chunk's encoding, where the codec
    takes its turn after the scorer. Costs a few milliseconds, and the scorer page-faults its working
    set in once per chunk (not once per pass). Returns whether anything was released.
    """
    libc = _libc() if _kept else None
    return bool(libc.malloc_trim(0)) if libc is not None else False
