"""CPU process memory: what glibc's allocator keeps after PyTorch frees a tensor.

glibc serves mid-sized buffers from its heap and keeps them when freed; with activation sizes that change every
step (packed rows have varying lengths) the heap fragments and the process holds far more than it uses.
Measured in bench/RESULTS.md. On other C libraries these are no-ops.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
GLIBC_DEFAULT_THRESHOLD = 128 * 1024  # glibc's initial mmap threshold
LARGE_BUFFER = 2 * 2**20  # bytes; lower thresholds cost speed in page faults (1 MiB: -17% tok/s)


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def return_large_buffers(threshold: int = LARGE_BUFFER) -> bool:
    """Buffers above `threshold` come from mmap and go back to the system when freed.

    Training peak -11% on SmolLM2 at unchanged tokens/s (bench/RESULTS.md); glibc's default threshold grows
    to 32 MB as big tensors are freed, after which they all stay in the heap."""
    import os

    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return False  # the user's own setting wins
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt(M_MMAP_THRESHOLD, threshold)
    return True


@contextlib.contextmanager
def large_buffers_returned(enabled: bool = True):
    """`return_large_buffers` for the duration of a block (training), then glibc's default threshold again,
    so a library user's process is left as it was. (glibc's threshold then stays fixed at 128 KiB instead of
    growing with freed blocks: the conservative side for memory.)"""
    changed = enabled and return_large_buffers()
    try:
        yield
    finally:
        if changed:
            _libc().mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)


def release_freed() -> None:
    """Hand the heap's free pages back to the system (after freeing a large model copy)."""
    import gc

    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
