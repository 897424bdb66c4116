"""Whichever TFLite interpreter is installed: ai-edge-litert (Python 3.11+ on x86-64 and
aarch64), else tflite-runtime (32-bit Pi OS), else full TensorFlow (training machines)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

# The runtime that reads a graph without verifying it first: a truncated or damaged file
# crashes the process (SIGSEGV) instead of raising (tflite-runtime 2.14, checked on x86 and
# an emulated 32-bit Pi; ai-edge-litert raised a ValueError at every truncation tried).
UNVERIFYING_RUNTIME = "tflite-runtime"

# Each runtime's module with its Interpreter, by the name interpreter_class() gives it.
RUNTIME_MODULES = {
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}

# Loads one graph with the Interpreter of module argv[1]; its exit status is the answer.
_PROBE = (
    "import importlib, sys; module, path = sys.argv[1:]; "
    "importlib.import_module(module).Interpreter(model_path=path).allocate_tensors()"
)


def interpreter_class() -> tuple[type, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    # tflite-runtime's C++ symbols bind to TensorFlow's own copies when TensorFlow is already
    # loaded in the process (tools/ evaluating a bundle), and then fail to read signatures.
    if "tensorflow" not in sys.modules:
        try:
            from tflite_runtime.interpreter import Interpreter

            return Interpreter, "tflite-runtime"
        except ImportError:
            pass
    try:
        import tensorflow as tf

        return tf.lite.Interpreter, "tensorflow"
    except ImportError as exc:
        raise ImportError(
            "no TFLite runtime installed: pip install ai-edge-litert (or tflite-runtime)"
        ) from exc


def load_interpreter(path: Path, num_threads: int = 1) -> Any:
    interpreter_cls, _ = interpreter_class()
    interpreter = interpreter_cls(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def crash_on_load(path: Path, runtime: str, timeout: float = 120.0) -> str | None:
    """Loads a graph in a child process first: the signal that killed it (e.g. "SIGSEGV"), or
    None if it loaded or failed with an ordinary error, which loading it here then reports.
    For graphs no digest vouches for, under a runtime that does not verify them."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, RUNTIME_MODULES[runtime], str(path)],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:.0f} s"
    if done.returncode < 0:
        try:
            return signal.Signals(-done.returncode).name
        except ValueError:
            return f"signal {-done.returncode}"
    return None


def named_io(interpreter: Any) -> tuple[dict[str, dict], dict[str, dict]]:
    """Input and output tensor details by their signature names (enc, keys, tokens, ...):
    tensor names and order differ between converter versions, signature names do not."""
    runner = interpreter.get_signature_runner()
    return dict(runner.get_input_details()), dict(runner.get_output_details())
