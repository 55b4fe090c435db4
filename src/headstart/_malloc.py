"""Keep PyTorch's large CPU buffers in the heap instead of fresh ``mmap`` pages.

PyTorch has no caching allocator on CPU: every activation tensor is a ``posix_memalign`` call. glibc
serves requests above its mmap threshold (at most 32 MiB by default) with a new ``mmap`` and gives
the pages back on ``free``, so every forward pass of a convolutional network at a realistic batch
size faults in hundreds of megabytes of zeroed pages again. A batch of 64 EfficientNet-Lite0 images
has activations of 77-300 MB. On the 2-core development machine that made CNN inference 3.4x, CNN
fine-tuning steps 2.2x and text fine-tuning 1.3x slower than they need to be
(``python bench/cpu_allocator.py`` measures them side by side; ``bench/results/cpu_allocator.md``).

Raising the mmap threshold and the trim threshold keeps those blocks in the heap, where the next
batch reuses them, which is what jemalloc / tcmalloc (the usual ``LD_PRELOAD`` advice for PyTorch
on CPU) achieve. The cost: freed blocks stay with the process instead of going back to the system,
as with any caching allocator: 8% more peak memory for the CNN and 31% for text fine-tuning at 512
tokens in that benchmark.

It is a process-wide setting, applied once by the CLI and by the library's compute entry points
(feature extraction, the training loop); ``HEADSTART_MALLOC_TUNING=0`` leaves malloc alone. It only
acts on Linux with glibc; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
_THRESHOLDS = (1 << 30, 32 << 20)  # 1 GiB; glibc versions that cap the setting accept 32 MiB


@functools.cache
def tune_malloc() -> bool:
    """Apply the setting (once per process); True when malloc now keeps large blocks in the heap."""
    if os.environ.get("HEADSTART_MALLOC_TUNING", "1") == "0":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for threshold in _THRESHOLDS:
        if mallopt(M_MMAP_THRESHOLD, threshold) == 1:
            # Freed blocks at the top of the heap would otherwise be trimmed back to the system
            # (and faulted in again by the next batch) as soon as they exceed 128 KiB.
            mallopt(M_TRIM_THRESHOLD, min(2 * threshold, 2**31 - 1))  # an int in C
            return True
    return False
