"""The machine a measurement ran on, for reports: timings differ several-fold between CPUs,
and int8 answers can differ by a clip where XNNPACK picks other kernels for another
processor's vector instructions (session 29: one held-out answer moved within a session whose
virtual machine changed speed)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The widest vector instructions XNNPACK's int8 kernels can use, by /proc/cpuinfo's flag names
# (x86 "flags", ARM "Features"), widest first.
_VECTOR_FLAGS = (
    ("avx512_vnni", "AVX-512 VNNI"),
    ("avx512f", "AVX-512"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx2", "AVX2"),
    ("asimddp", "NEON dot product"),
    ("asimd", "NEON"),
)


def vector_extensions(flags: str) -> str | None:
    """The widest vector extension named in a /proc/cpuinfo flags line, or None."""
    present = set(flags.split())
    return next((name for flag, name in _VECTOR_FLAGS if flag in present), None)


def machine() -> str:
    """CPU model, its widest vector extension, cores, OS and Python, e.g. "AMD EPYC (AVX2),
    2 cores, Linux 6.1, Python 3.11.7"."""
    model = vector = None  # from the first processor /proc/cpuinfo lists
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() in ("flags", "Features") and vector is None:
                vector = vector_extensions(value)
    except OSError:
        pass
    cpu = model or platform.processor() or platform.machine()
    return (
        f"{cpu}{f' ({vector})' if vector else ''}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
