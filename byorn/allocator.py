"""Keep the memory a process frees for its next tensors (glibc's malloc), instead of handing it
back to the operating system and faulting it in again.

A forward pass of a small model allocates and frees activations of a few MiB each, over and over.
glibc maps blocks that size afresh each time, or trims them off the top of its heap, and every new
page then costs a page fault. Raising the two thresholds keeps freed blocks in the heap; what the
process holds is then its peak, which it reached anyway. On byorn-tiny a fresh process then scores
14-42 % more samples a second and fine-tunes in about 13 % less time (benchmarks/cost.py, with and
without --default-allocator); a long-lived process that has already freed large blocks gains less,
as glibc raises its thresholds itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest: blocks over it are still mapped (model weights)
TRIM_THRESHOLD = 1 << 30  # free memory kept at the heap's top before it is given back


def keep_freed_memory() -> bool:
    """Set the thresholds where the C library is glibc (Linux); elsewhere, or when it refuses, do
    nothing. Whether they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # musl and others have no mallopt
    except (OSError, AttributeError):
        return False
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not done:
        log.debug("mallopt refused the thresholds; memory is returned as it is freed")
    return done
