"""Give freed activation memory back to the system during training (glibc's allocator).

PyTorch's CPU tensors come from `malloc`. glibc serves a block above its mmap threshold with its
own mapping, returned to the system on free, but it raises that threshold to the size of each
such block freed (up to 32 MiB), so after the first step a training step's activations (a few
MiB to a few tens of MiB each) come from its heaps, and the heaps keep them when they are freed:
measured on `configs/cpu-demo.yaml`, 7.3 of the 8.5 GiB resident after the training steps was
free heap memory, held for the rest of the run (docs/performance.md, Training memory).
Fixing the threshold sends every block of `MMAP_THRESHOLD` bytes or more to its own mapping, so
resident memory follows the memory in use. Other C libraries (musl, macOS) are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 20  # 1 MiB: every activation of a step, small bookkeeping stays on the heap


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:  # pragma: no cover
        return None


def return_freed_memory(threshold: int = MMAP_THRESHOLD) -> bool:
    """Make glibc map blocks of `threshold` bytes or more one by one (returned on free) and trim
    its heaps at the same size; hand back what the heaps hold free now. False where the C
    library is not glibc (nothing changed)."""
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1 and \
        libc.mallopt(M_TRIM_THRESHOLD, threshold) == 1
    libc.malloc_trim(0)
    if not ok:  # pragma: no cover
        log.warning("glibc refused mallopt(%d); freed training memory may stay resident",
                    threshold)
    return ok
