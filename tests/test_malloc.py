"""The CPU allocator setting: large tensors come from the heap, not from fresh mmap pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="the setting is glibc's (mallopt); elsewhere tune_malloc() is a no-op")

# Run in a fresh interpreter: the setting is process-wide, and this test process has it already.
PROBE = textwrap.dedent("""
    import ctypes, torch
    from headstart._malloc import tune_malloc

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def mmapped_bytes_with_a_64_mib_tensor() -> int:
        t = torch.ones(64 << 20, dtype=torch.uint8)  # the size of one conv activation at batch 64
        return libc.mallinfo2().hblkhd + 0 * int(t[0])

    before = mmapped_bytes_with_a_64_mib_tensor()
    tuned = tune_malloc()
    print(before, tuned, mmapped_bytes_with_a_64_mib_tensor())
""")


def _probe(env: dict[str, str]) -> tuple[int, bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return int(out[0]), out[1] == "True", int(out[2])


@pytest.mark.slow
def test_tuned_malloc_serves_large_tensors_from_the_heap() -> None:
    before, tuned, after = _probe({"HEADSTART_MALLOC_TUNING": "1"})
    assert before >= 64 << 20  # glibc's default: a fresh mapping per large tensor
    assert tuned
    assert after < 64 << 20  # now from the heap, where the next batch reuses it


@pytest.mark.slow
def test_malloc_tuning_can_be_turned_off() -> None:
    before, tuned, after = _probe({"HEADSTART_MALLOC_TUNING": "0"})
    assert not tuned
    assert before >= 64 << 20 and after >= 64 << 20
