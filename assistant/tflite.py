"""Whichever TFLite interpreter is installed: ai-edge-litert (Python 3.11+ on x86-64 and
aarch64), else tflite-runtime (32-bit Pi OS), else full TensorFlow (training machines)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


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


def named_io(interpreter: Any) -> tuple[dict[str, dict], dict[str, dict]]:
    """Input and output tensor details by their signature names (enc, keys, tokens, ...):
    tensor names and order differ between converter versions, signature names do not."""
    runner = interpreter.get_signature_runner()
    return dict(runner.get_input_details()), dict(runner.get_output_details())
