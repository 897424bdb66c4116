"""pyproject.toml asks for exactly one TFLite runtime on every machine a Pi user may have.

pip evaluates the dependencies' markers with `platform.machine()`, the kernel's name for the
machine: on a 32-bit Raspberry Pi OS that is armv7l, or armv8l under `linux32` where the
kernel is 64-bit (a Pi 4 or 5; `.ci/setup` runs pip so there), and a wrong pick fails the
install (ai-edge-litert has no 32-bit ARM wheels).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
RUNTIMES = {"ai-edge-litert", "tflite-runtime"}


def runtimes_required(machine: str, python_version: str) -> set[str]:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    environment = {
        "platform_machine": machine,
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
    }
    required = {Requirement(line) for line in dependencies}
    return {
        requirement.name
        for requirement in required
        if requirement.name in RUNTIMES
        and (requirement.marker is None or requirement.marker.evaluate(environment))
    }


@pytest.mark.parametrize(
    ("machine", "python_version", "runtime"),
    [
        ("x86_64", "3.11", "ai-edge-litert"),
        ("x86_64", "3.13", "ai-edge-litert"),
        ("aarch64", "3.11", "ai-edge-litert"),  # 64-bit Pi OS Bookworm
        ("aarch64", "3.13", "ai-edge-litert"),  # 64-bit Pi OS Trixie
        ("armv7l", "3.11", "tflite-runtime"),  # 32-bit Pi OS, 32-bit kernel (Pi 2, 3, Zero 2)
        ("armv8l", "3.11", "tflite-runtime"),  # 32-bit Pi OS, 64-bit kernel, under linux32
    ],
)
def test_one_runtime_for_each_machine(machine: str, python_version: str, runtime: str) -> None:
    assert runtimes_required(machine, python_version) == {runtime}
