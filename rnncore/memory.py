"""How the process's C allocator treats freed memory (glibc on Linux), for the command line.

A training step allocates its activations, gradients and their temporaries and frees them at
the end of the step, then allocates the same sizes again. glibc's malloc serves blocks over its
mmap threshold (dynamic, at most 32 MB) with fresh memory maps and unmaps them when freed, and
hands the top of its heaps back to the kernel once over its trim threshold: each step then
page-faults its tensors in again, the kernel zeroing every page. Keeping freed blocks of up to
256 MB in the process removes that work (2 cores, torch training steps, same batches,
interleaved harness runs: see the README's "CPU memory" section).

This is a process-wide setting, so the library never makes it on import: the `rnncore` command
line (which owns its process) makes it before anything runs; a script can call
`keep_freed_memory()` itself. Settings the user made (`MALLOC_MMAP_THRESHOLD_`,
`MALLOC_TRIM_THRESHOLD_`, `GLIBC_TUNABLES`) are left as they are, and `RNNCORE_KEEP_FREED_MEMORY=0`
turns it off.
"""

from __future__ import annotations

import ctypes
import os

LARGEST_KEPT_BLOCK = 256 * 2**20  # bytes; bigger blocks are still mapped and unmapped per use
OFF_SWITCH = "RNNCORE_KEEP_FREED_MEMORY"
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

# mallopt() parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(largest_block: int = LARGEST_KEPT_BLOCK) -> bool:
    """Let glibc's malloc keep freed blocks of up to `largest_block` bytes for reuse, and keep
    up to that much free memory at the top of its heaps. Returns whether it did: not off glibc
    (macOS, musl: nothing to do), not where the user set the allocator up, not with
    `RNNCORE_KEEP_FREED_MEMORY=0`.

    The cost: a process holds on to memory it freed, up to its peak use, instead of returning
    it between steps (a training run reaches that peak every step anyway).
    """
    if os.environ.get(OFF_SWITCH, "1") == "0" or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; musl's stub returns 0, and glibc refuses out-of-range values
    return bool(mallopt(_M_MMAP_THRESHOLD, largest_block)) and bool(mallopt(_M_TRIM_THRESHOLD, largest_block))
