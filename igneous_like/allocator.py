"""glibc malloc settings for tasks that allocate and free many large numpy temporaries.

By default glibc serves every block above 128 KiB (growing adaptively) with a fresh mmap and
gives freed heap memory back to the kernel, so each new temporary is zero-filled again, page
by page: at millions of labels the stats tasks spent about as much CPU in page faults (system
time) as in numpy. Raising the mmap threshold to its maximum (32 MiB) and keeping freed heap
memory lets later temporaries reuse pages already mapped. Measured on the 4M-label benchmark
volume, in process: map task system time 3.4 -> 1.2 s, reduce 4.2 -> 2.3 s, for ~100 MB more
peak RSS. Process-wide and idempotent; a no-op where libc is not glibc."""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit: larger values are refused
TRIM_THRESHOLD = 1 << 32
TOP_PAD = 512 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Apply the settings above to this process; False where mallopt is unavailable."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
