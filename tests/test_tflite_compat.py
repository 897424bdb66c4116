"""Exported graphs load and agree in both runtimes: ai-edge-litert (x86-64, aarch64) and
tflite-runtime 2.14 (the newest build for 32-bit Pi OS).

Each runtime runs in a fresh subprocess without TensorFlow: once TensorFlow is imported,
tflite-runtime's wrapper binds its TFLite C++ symbols (Interpreter, InterpreterBuilder, ...)
to the 2.21 copies in libtensorflow_cc.so.2 and fails with 'ValueError: vector::reserve'
in its constructor, whatever the model. On the Pi there is no TensorFlow, so only the
subprocess shows what the Pi sees.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from assistant.model import subsampled_length  # noqa: E402
from tools.export import EncoderExport, StepExport, convert  # noqa: E402
from tools.model import ModelConfig  # noqa: E402
from tools.train import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}

# Loads a graph with one runtime, feeds the inputs by signature name, saves the outputs.
RUNNER = """
import sys
import numpy as np
package, model, inputs, outputs = sys.argv[1:5]
Interpreter = __import__(package + ".interpreter", fromlist=["Interpreter"]).Interpreter
from assistant.tflite import named_io
assert "tensorflow" not in sys.modules, "TensorFlow would clash with tflite-runtime"
interpreter = Interpreter(model_path=model, num_threads=1)
interpreter.allocate_tensors()
ins, outs = named_io(interpreter)
feed = np.load(inputs)
assert sorted(ins) == sorted(feed.files), (sorted(ins), feed.files)
# Open dimensions (the encoder's frames, the step graph's encoder steps) are sized to the
# inputs, as the runtime does.
resized = [n for n, d in ins.items() if list(d["shape"]) != list(feed[n].shape)]
for name in resized:
    interpreter.resize_tensor_input(ins[name]["index"], list(feed[name].shape))
if resized:
    interpreter.allocate_tensors()
    ins, outs = named_io(interpreter)
for name, detail in ins.items():
    interpreter.set_tensor(detail["index"], feed[name])
interpreter.invoke()
np.savez(outputs, **{name: interpreter.get_tensor(d["index"]) for name, d in outs.items()})
"""

FRAMES, BEAM = 24, 3
CONFIG = ModelConfig(
    n_mels=8, conv_channels=4, proj_dim=32, enc_units=16, enc_layers=1, embed_dim=16, dec_units=32
)


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def run_graph(package: str, model: Path, feed: dict[str, np.ndarray], tmp: Path) -> dict:
    inputs, outputs = tmp / f"{model.stem}-in.npz", tmp / f"{model.stem}-{package}.npz"
    np.savez(inputs, **feed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, package, str(model), str(inputs), str(outputs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, f"{package} on {model.name}:\n{proc.stderr[-3000:]}"
    with np.load(outputs) as saved:
        return {name: saved[name] for name in saved.files}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """A tiny untrained recogniser exported as the real graphs are (looped GRU, dict
    outputs, dynamic-range int8), with inputs and TensorFlow's float outputs."""
    tmp = tmp_path_factory.mktemp("compat")
    model = build_model(CONFIG)
    steps = subsampled_length(FRAMES)
    rng = np.random.default_rng(0)
    # Open lengths, as shipped (format 4), the GRU loop at 3 steps an iteration (2 here).
    encoder = EncoderExport(model, None, chunk=3)
    step = StepExport(model, None, BEAM)
    enc_in = {"feats": rng.standard_normal((1, FRAMES, CONFIG.n_mels)).astype(np.float32)}
    enc_ref = {k: v.numpy() for k, v in encoder.encode(**enc_in).items()}
    mask = np.zeros((1, steps), np.float32)
    mask[0, : steps - 3] = 1.0  # the last steps are padding, as for a shorter command
    step_in = {
        "tokens": rng.integers(0, CONFIG.vocab_size, BEAM).astype(np.int32),
        "state": rng.standard_normal((BEAM, CONFIG.dec_units)).astype(np.float32),
        "enc": enc_ref["enc"],
        "keys": enc_ref["keys"],
        "mask": mask,
    }
    step_ref = {k: v.numpy() for k, v in step.step(**step_in).items()}
    out = {}
    for name, module, function, feed, ref in (
        ("encoder", encoder, encoder.encode, enc_in, enc_ref),
        ("step", step, step.step, step_in, step_ref),
    ):
        path = tmp / f"{name}.tflite"
        path.write_bytes(convert(module, function, quantise=True))
        out[name] = (path, feed, ref)
    return tmp, out


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
@pytest.mark.parametrize("graph", ["encoder", "step"])
def test_graph_runs_in_runtime(graphs, runtime, graph):
    package = RUNTIMES[runtime]
    if not installed(package):
        pytest.skip(f"{runtime} not installed")
    tmp, built = graphs
    path, feed, ref = built[graph]
    got = run_graph(package, path, feed, tmp)
    assert sorted(got) == sorted(ref)
    for name, want in ref.items():
        assert got[name].shape == want.shape, name
        # int8 weights against TensorFlow's float graph: close, not equal.
        np.testing.assert_allclose(got[name], want, atol=0.05, err_msg=f"{runtime} {name}")


def test_runtimes_agree(graphs):
    if not all(installed(p) for p in RUNTIMES.values()):
        pytest.skip("needs both ai-edge-litert and tflite-runtime")
    tmp, built = graphs
    for path, feed, _ in built.values():
        litert = run_graph("ai_edge_litert", path, feed, tmp)
        legacy = run_graph("tflite_runtime", path, feed, tmp)
        for name in litert:
            # Their hybrid int8 kernels quantise activations differently: small gaps only.
            np.testing.assert_allclose(legacy[name], litert[name], atol=0.02, err_msg=name)
