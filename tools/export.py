"""Export a trained checkpoint as TFLite graphs: one encoder and one decoder step, both with
their time axis open, which the runtime sizes to each input length bucket.

Facts that shape this file (TF 2.21, see DESIGN.md): a few length buckets, because a graph
sized to a 3 s bucket takes a third of the time of one sized to the 8 s bucket's padding
(a decoder step measured 0.27 against 0.82 ms); the time axes are open rather than one file
exported per bucket (bundle format 2 had four, 1.37 MiB; version 2.9 has two, 0.63 MiB), since
a graph resized at load computes the same numbers as one exported for that length (the
encoder's loop then takes the steps per iteration that divide every bucket: 0.5 ms more for
8 s); the runtime pads to the buckets the model was trained and calibrated with, not to each
utterance's own length (see OPEN_PADDING below); the variables
are attached to a tf.Module, not the Keras model, or the converter drops the weights; and
dense layers are quantised per tensor so that older runtimes can load the dynamic-range model
(per channel needs FULLY_CONNECTED v12, which tflite-runtime 2.14, the last build for 32-bit
Pi OS, does not have).

These graphs load in tflite-runtime 2.14 as they are, signature defs included. It fails
('ValueError: vector::reserve' from GetSignatureDefs) only in a process that imported
TensorFlow first: its wrapper then binds the TFLite C++ symbols to TF's own copies in
libtensorflow_cc.so.2, of another version. Check exported graphs with tflite-runtime in a
fresh process without TensorFlow (tests/test_tflite_compat.py).

Quantisation is dynamic range (int8 weights, float activations). Full-integer conversion
segfaults on a looped GRU; unrolling avoids that but measured here it grows each encoder
with its length (0.9 MB at 1.5 s, 1.4 MB at 3 s, int8) while the looped graph stays at
0.46 MB for any length, at 2.7 ms instead of 1.5 ms for 3 s of audio (ai-edge-litert, x86).
The size limit (1.5 MB for the bundle) decides: the GRUs stay looped.
The loop is our own (`looped_bigru`): a few steps per iteration and both directions in one
loop, which keeps the looped size and takes a third of Keras's time on 8 s of audio.

The step graph runs once per token for every beam row, so what does not depend on the row is
taken out of it (version 2.10, folded_decode_step): the token embeddings through the GRU's
input kernel become a table, and the combine layer's context half moves to the encoder graph
(attention_values). Its attention stays in the batched einsum form training uses: written as
plain matrix products over the rows, the converter made the scores a FULLY_CONNECTED with the
keys as runtime weights, and the step took 0.48 instead of 0.23 ms.

OPEN_PADDING: sized to each utterance's own length (the next 0.32 s), version 2.8's weights
heard the held-out TTS commands in noise worse than padded to the 3 s bucket (exact text at
12 dB 65 against 71%): the backward GRU layers start from the padding after the speech, and
how much there is changes their states (mean absolute difference ~0.1 on 1 s clips, against
an RMS of 0.77). Padding to the trained buckets keeps every answer as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from assistant.bundle import file_digest
from assistant.model import subsampled_length
from tools.model import LENGTH_BUCKETS, ModelConfig, Recogniser
from tools.train import build_model

DEFAULT_BUCKETS = LENGTH_BUCKETS
# Grammar hypotheses kept per decoder step (the step graphs run BEAM + 1 rows). 12 rather than
# 8: on held-out TTS home commands the exact-text rate rose from 73.0 to 77.5% (58.5 to 61.5%
# at 6 dB SNR) and AN4 dev WER fell from 11.1 to 9.5%, for ~2.3 ms more per 3 s command.
BEAM = 12


# GRU steps per loop iteration: the largest divisor of every bucket's encoder steps up to this
# (5 for 3 s and 8 s). Measured for 8 s: 2 steps 9.0 ms, 4: 7.5, 5: 6.4, 8: 5.9 (Keras's 19 ms).
MAX_STEPS_PER_ITERATION = 8


def steps_per_iteration(buckets: tuple[int, ...]) -> int:
    steps = [subsampled_length(frames) for frames in buckets]
    return max(k for k in range(1, MAX_STEPS_PER_ITERATION + 1) if all(n % k == 0 for n in steps))


def _check_default_gru(cell) -> None:
    activations = cell.activation.__name__, cell.recurrent_activation.__name__
    if not cell.reset_after or activations != ("tanh", "sigmoid"):
        raise ValueError("the export implements the default GRU: reset_after, tanh, sigmoid")


def _gru_step(inputs: tf.Tensor, state: tf.Tensor, cell) -> tf.Tensor:
    """One step of a Keras GRUCell (reset_after=True: the reset gate scales the recurrent
    part after its matrix product) whose input product ``inputs`` [N, 3H] is precomputed."""
    recurrent = tf.matmul(state, cell.recurrent_kernel) + cell.bias[1]
    x_z, x_r, x_h = tf.split(inputs, 3, axis=-1)
    h_z, h_r, h_h = tf.split(recurrent, 3, axis=-1)
    update = tf.sigmoid(x_z + h_z)
    reset = tf.sigmoid(x_r + h_r)
    candidate = tf.tanh(x_h + reset * h_h)
    return update * state + (1.0 - update) * candidate


def looped_bigru(x: tf.Tensor, layer, chunk: int | None = None) -> tf.Tensor:
    """What a Keras Bidirectional(GRU) layer computes for x [1, T, D], written for TFLite.

    Keras's own loop, converted, runs one WHILE iteration per step and per direction, and
    each iteration copies the whole output buffer; ops inside a WHILE body also miss the
    XNNPACK delegate. Here the input products of all steps are one matrix product per
    direction, and one loop runs both directions, a few steps per iteration: the same
    numbers (bit-identical int8 outputs), 3.6 -> 2.8 ms for 3 s and 19 -> 6 ms for 8 s
    (one thread, ai-edge-litert). Fully unrolled would be 1.3 ms for 3 s, but 1.0 MB per
    encoder instead of 0.5 (the bundle's aim is 1.5 MB in all).

    ``chunk`` steps per iteration; by default the largest divisor of x's steps up to
    MAX_STEPS_PER_ITERATION. With x's steps open, every length it runs at must be a multiple
    of ``chunk`` (a shorter output tells the runtime's shape check otherwise)."""
    forward, backward = layer.forward_layer.cell, layer.backward_layer.cell
    for cell in (forward, backward):
        _check_default_gru(cell)
    steps, units = x.shape[1], forward.units
    if steps is None:
        if chunk is None:
            raise ValueError("an open number of steps needs a fixed chunk")
        steps = tf.shape(x)[1]
    elif chunk is None:
        chunk = max(k for k in range(1, MAX_STEPS_PER_ITERATION + 1) if steps % k == 0)
    elif steps % chunk:
        raise ValueError(f"{steps} steps are not a multiple of {chunk}")
    chunks = steps // chunk

    def inputs(cell):  # [chunks, chunk, 3H]
        projected = tf.matmul(x[0], cell.kernel) + cell.bias[0]
        return tf.reshape(projected, [chunks, chunk, 3 * units])

    fwd_in, bwd_in = inputs(forward), inputs(backward)
    fwd_out = tf.TensorArray(tf.float32, size=chunks)
    bwd_out = tf.TensorArray(tf.float32, size=chunks)

    def body(i, h_fwd, h_bwd, fwd_out, bwd_out):
        fwd_chunk, bwd_chunk = fwd_in[i], bwd_in[chunks - 1 - i]
        fwd_states, bwd_states = [], [None] * chunk
        for j in range(chunk):
            h_fwd = _gru_step(fwd_chunk[j : j + 1], h_fwd, forward)
            fwd_states.append(h_fwd)
            back = chunk - 1 - j
            h_bwd = _gru_step(bwd_chunk[back : back + 1], h_bwd, backward)
            bwd_states[back] = h_bwd
        return (
            i + 1,
            h_fwd,
            h_bwd,
            fwd_out.write(i, tf.concat(fwd_states, 0)),
            bwd_out.write(chunks - 1 - i, tf.concat(bwd_states, 0)),
        )

    zeros = tf.zeros([1, units])
    _, _, _, fwd_out, bwd_out = tf.while_loop(
        lambda i, *_: i < chunks, body, (0, zeros, zeros, fwd_out, bwd_out)
    )
    fwd_states = tf.reshape(fwd_out.stack(), [steps, units])
    bwd_states = tf.reshape(bwd_out.stack(), [steps, units])
    return tf.concat([fwd_states, bwd_states], axis=-1)[None]


class EncoderExport(tf.Module):
    """The encoder graph; ``frames`` None leaves its input frames open, so one file serves
    every bucket, its GRU loop taking ``chunk`` steps per iteration (steps_per_iteration)."""

    def __init__(self, model: Recogniser, frames: int | None, chunk: int | None = None):
        super().__init__()
        # Keras 3 wraps each tf.Variable: attach the tf.Variables themselves, or the converter
        # silently freezes nothing and the graph computes with missing weights.
        self.tf_variables = [v.value for v in model.variables]
        n_mels = model.config.n_mels

        @tf.function(input_signature=[tf.TensorSpec([1, frames, n_mels], tf.float32, name="feats")])
        def encode(feats):
            enc, keys = model.encode(feats, run_bigru=lambda x, rnn: looped_bigru(x, rnn, chunk))
            ctc = tf.nn.log_softmax(model.ctc_head(enc))
            # "enc" is what the step graph reads from the encoder: since version 2.10 the
            # attention values (see StepExport), no longer the encoder states themselves.
            return {"enc": attention_values(model, enc), "keys": keys, "ctc": ctc}

        self.encode = encode


def attention_values(model: Recogniser, enc: tf.Tensor) -> tf.Tensor:
    """enc [1, T, D] -> [1, T, H]: each encoder state times the context half of the decoder's
    combine layer. The step's context is a weighted mean of the encoder states, and a matrix
    product commutes with a weighted mean, so this product is taken once per utterance here
    instead of once per beam row and decoder step in the step graph."""
    context_kernel = model.combine.kernel[model.config.dec_units :]
    return tf.matmul(enc[0], context_kernel)[None]


def folded_decode_step(model: Recogniser, token_inputs, tokens, state, values, keys, mask):
    """Recogniser.decode_step for the step graph, with its products folded: ``token_inputs``
    [V, 3H] is each token's embedding already through the GRU's input kernel (a table
    lookup instead of a product per row), and ``values`` [1, T, H] the attention values
    (attention_values), so the combine layer multiplies only the decoder state. The same
    function in float (to ~1e-6), 0.67x the multiplications per row (133k against 197k
    at 75 encoder steps), and a step 0.76x the time (0.23 against 0.31 ms, 13 rows over 3 s,
    int8, one thread, ai-edge-litert on an AMD EPYC without AVX-512)."""
    if model.combine.activation.__name__ != "tanh":
        raise ValueError("the step graph implements a tanh combine layer")
    _check_default_gru(model.dec_cell)
    h = _gru_step(tf.gather(token_inputs, tokens), state, model.dec_cell)
    weights = model.attention_weights(h[None], keys, mask)
    # Reshaped, not indexed: XNNPACK takes a reshape but not that slice, and the slice split
    # the graph into three delegate partitions instead of two (a step 229-242 against 250 µs,
    # 13 rows, the older EPYC; 2026-12-06). Version 2.12 is the first bundle exported so.
    context = tf.reshape(tf.einsum("but,btd->bud", weights, values), [-1, values.shape[-1]])
    state_kernel = model.combine.kernel[: model.config.dec_units]
    combined = tf.tanh(tf.matmul(h, state_kernel) + context + model.combine.bias)
    return tf.nn.log_softmax(model.out(combined)), h


class StepExport(tf.Module):
    """The one-step decoder graph (folded_decode_step); ``steps`` None leaves the encoder
    steps open, so one file serves every bucket (the runtime sizes it to each: the same
    numbers and speed as a graph exported for that bucket, at one copy of the decoder's
    weights). Its "enc" input is the encoder graph's "enc" output: the attention values."""

    def __init__(self, model: Recogniser, steps: int | None, rows: int):
        super().__init__()
        self.tf_variables = [v.value for v in model.variables]
        c = model.config
        cell = model.dec_cell
        embeddings = model.embed.embeddings.numpy()
        token_inputs = embeddings @ cell.kernel.numpy() + cell.bias.numpy()[0]
        self.token_inputs = tf.constant(token_inputs.astype(np.float32))

        @tf.function(
            input_signature=[
                tf.TensorSpec([rows], tf.int32, name="tokens"),
                tf.TensorSpec([rows, c.dec_units], tf.float32, name="state"),
                tf.TensorSpec([1, steps, c.dec_units], tf.float32, name="enc"),
                tf.TensorSpec([1, steps, c.dec_units], tf.float32, name="keys"),
                tf.TensorSpec([1, steps], tf.float32, name="mask"),
            ]
        )
        def step(tokens, state, enc, keys, mask):
            log_probs, new_state = folded_decode_step(
                model, self.token_inputs, tokens, state, enc, keys, mask
            )
            return {"log_probs": log_probs, "state": new_state}

        self.step = step


def convert(module: tf.Module, function, quantise: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], module
    )
    if quantise:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # Per-channel dense weights need FULLY_CONNECTED v12: not in tflite-runtime 2.14.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    return converter.convert()


def load_trained(checkpoint: Path, config: ModelConfig) -> Recogniser:
    model = build_model(config)
    model.load_weights(checkpoint)
    return model


def export(
    checkpoint: Path,
    config: ModelConfig,
    out_dir: Path,
    quantise: bool,
    buckets: tuple[int, ...] = DEFAULT_BUCKETS,
    beam: int = BEAM,
) -> dict:
    """Write one encoder.tflite and one decoder-step.tflite, each serving every bucket (sized
    by the runtime to its frames); return their manifest entries."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_trained(checkpoint, config)
    step = StepExport(model, None, beam + 1)  # + the free decode's row
    step_file = "decoder-step.tflite"
    (out_dir / step_file).write_bytes(convert(step, step.step, quantise))
    encoder = EncoderExport(model, None, steps_per_iteration(buckets))
    encoder_file = "encoder.tflite"
    (out_dir / encoder_file).write_bytes(convert(encoder, encoder.encode, quantise))
    encoders = [
        {
            "file": encoder_file,
            "frames": frames,
            "steps": subsampled_length(frames),
            "decoder_step": step_file,
        }
        for frames in sorted(buckets)
    ]
    return {
        "encoders": encoders,
        "sha256": {name: file_digest(out_dir / name) for name in (encoder_file, step_file)},
        "beam": beam,
        "enc_dim": config.dec_units,  # the attention values the step reads (StepExport)
        "state_size": config.dec_units,
        "quantisation": "int8 weights (dynamic range)" if quantise else "float32",
    }
