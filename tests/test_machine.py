"""The machine line of cards and benchmark reports names the vector instructions that decide
XNNPACK's int8 kernels (and so, by a clip, some answers)."""

from __future__ import annotations

import os
import platform

from tools.machine import machine, vector_extensions


def test_the_widest_vector_extension_is_named() -> None:
    assert vector_extensions("fpu sse2 avx avx2 avx512f avx512_vnni") == "AVX-512 VNNI"
    assert vector_extensions("fpu sse2 avx avx2 avx512f") == "AVX-512"
    assert vector_extensions("fpu sse2 avx avx2 fma") == "AVX2"
    assert vector_extensions("fp asimd evtstrm crc32 asimddp") == "NEON dot product"
    assert vector_extensions("fp asimd evtstrm crc32") == "NEON"
    assert vector_extensions("fpu sse2") is None


def test_machine_names_this_one() -> None:
    line = machine()
    assert f"{os.cpu_count()} cores" in line
    assert f"Python {platform.python_version()}" in line
    if platform.machine() == "x86_64" and "avx2" in open("/proc/cpuinfo").read():
        assert "(AVX" in line
