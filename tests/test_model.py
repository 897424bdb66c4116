"""The graphs the runtime uses compute what training computes: one decoder step for a beam of
rows (sharing one utterance's encoder states) gives, per row, the teacher-forced output, and
the export's own GRU loop gives what Keras's bidirectional GRU layers give."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from assistant.model import subsampled_length  # noqa: E402
from tools.model import ModelConfig  # noqa: E402
from tools.train import build_model  # noqa: E402

CONFIG = ModelConfig(
    n_mels=8, conv_channels=4, proj_dim=32, enc_units=16, enc_layers=1, embed_dim=16, dec_units=32
)


def test_beam_step_matches_teacher_forcing():
    rng = np.random.default_rng(1)
    model = build_model(CONFIG)
    frames = 40
    steps = subsampled_length(frames)
    enc, keys = model.encode(rng.standard_normal((1, frames, CONFIG.n_mels)).astype(np.float32))
    mask = np.zeros((1, steps), np.float32)
    mask[0, : steps - 2] = 1.0  # padding at the end, as for a shorter command
    rows, length = 3, 5
    tokens = rng.integers(2, CONFIG.vocab_size, (rows, length)).astype(np.int32)

    forced = model.decode_teacher_forced(
        tokens,
        tf.repeat(enc, rows, axis=0),
        tf.repeat(keys, rows, axis=0),
        np.repeat(mask, rows, axis=0),
    )
    want = tf.nn.log_softmax(forced).numpy()  # [rows, length, vocab]

    state = np.zeros((rows, CONFIG.dec_units), np.float32)
    for t in range(length):
        log_probs, state = model.decode_step(tokens[:, t], state, enc, keys, mask)
        np.testing.assert_allclose(log_probs.numpy(), want[:, t], atol=1e-5, err_msg=f"step {t}")


@pytest.mark.parametrize("steps", [6, 10, 11])  # chunks of 6, 5 and 1 steps per iteration
def test_export_gru_loop_matches_keras(steps):
    from tools.export import looped_bigru

    rng = np.random.default_rng(steps)
    model = build_model(CONFIG)
    layer = model.enc_rnns[0]
    x = rng.standard_normal((1, steps, CONFIG.proj_dim)).astype(np.float32)
    np.testing.assert_allclose(looped_bigru(x, layer).numpy(), layer(x).numpy(), atol=1e-5)


def test_open_length_gru_loop_matches_keras_at_every_multiple_of_its_chunk():
    import tensorflow as tf

    from tools.export import looped_bigru

    model = build_model(CONFIG)
    layer = model.enc_rnns[0]
    spec = tf.TensorSpec([1, None, CONFIG.proj_dim], tf.float32)
    looped = tf.function(lambda x: looped_bigru(x, layer, chunk=5), input_signature=[spec])
    rng = np.random.default_rng(4)
    for steps in (5, 15, 40):
        x = rng.standard_normal((1, steps, CONFIG.proj_dim)).astype(np.float32)
        np.testing.assert_allclose(looped(x).numpy(), layer(x).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="fixed chunk"):
        open_without_chunk = tf.function(lambda x: looped_bigru(x, layer), input_signature=[spec])
        open_without_chunk.get_concrete_function()
    with pytest.raises(ValueError, match="not a multiple"):
        looped_bigru(rng.standard_normal((1, 12, CONFIG.proj_dim)).astype(np.float32), layer, 5)


def test_steps_per_iteration_divides_every_bucket():
    from tools.export import steps_per_iteration

    assert steps_per_iteration((300, 800)) == 5  # 75 and 200 steps
    assert steps_per_iteration((800,)) == 8
    assert steps_per_iteration((100, 300)) == 5
    assert steps_per_iteration((104, 300)) == 1  # 26 and 75 steps


@pytest.mark.parametrize("frames", [None, 40])
def test_exported_encoder_computes_the_keras_encoder(frames):
    from tools.export import EncoderExport

    rng = np.random.default_rng(2)
    model = build_model(CONFIG)
    exported = EncoderExport(model, frames, chunk=5 if frames is None else None)
    for length in [40] if frames else [40, 60]:  # open: one graph at any multiple of 20
        feats = rng.standard_normal((1, length, CONFIG.n_mels)).astype(np.float32)
        got = exported.encode(feats)
        enc, keys = model.encode(feats)
        # "enc" carries what the step graph reads: the states through the combine layer's
        # context half (tools.export.attention_values)
        values = enc.numpy() @ model.combine.kernel.numpy()[CONFIG.dec_units :]
        np.testing.assert_allclose(got["enc"].numpy(), values, atol=1e-5)
        np.testing.assert_allclose(got["keys"].numpy(), keys.numpy(), atol=1e-5)


def test_exported_step_computes_the_keras_step():
    """The step graph's folded products (token inputs looked up, attention values from the
    encoder graph) give Keras's decode_step, for every row of a beam and every token."""
    from tools.export import EncoderExport, StepExport

    rng = np.random.default_rng(4)
    model = build_model(CONFIG)
    frames = 40
    steps = subsampled_length(frames)
    feats = rng.standard_normal((1, frames, CONFIG.n_mels)).astype(np.float32)
    enc, keys = model.encode(feats)
    exported = EncoderExport(model, frames).encode(feats)
    mask = np.zeros((1, steps), np.float32)
    mask[0, : steps - 3] = 1.0
    rows = CONFIG.vocab_size  # one row per token: every row of the folded table is used
    tokens = np.arange(rows, dtype=np.int32)
    state = rng.standard_normal((rows, CONFIG.dec_units)).astype(np.float32)
    want_log_probs, want_state = model.decode_step(tokens, state, enc, keys, mask)
    got = StepExport(model, steps, rows).step(tokens, state, exported["enc"], keys, mask)
    np.testing.assert_allclose(got["log_probs"].numpy(), want_log_probs.numpy(), atol=1e-5)
    np.testing.assert_allclose(got["state"].numpy(), want_state.numpy(), atol=1e-5)


def test_dropout_acts_only_while_training():
    """A model trained with dropout computes, outside training, exactly what the same weights
    compute without it (so export and runtime need nothing new); in training it drops."""
    from dataclasses import replace

    rng = np.random.default_rng(3)
    plain = build_model(CONFIG)
    dropped = build_model(replace(CONFIG, dropout=0.3))
    dropped.set_weights(plain.get_weights())
    feats = rng.standard_normal((2, 40, CONFIG.n_mels)).astype(np.float32)
    tokens = rng.integers(2, CONFIG.vocab_size, (2, 5)).astype(np.int32)
    mask = np.ones((2, subsampled_length(40)), np.float32)

    def logits(model, training):
        return model((feats, tokens, mask), training=training)[0].numpy()

    np.testing.assert_allclose(logits(dropped, False), logits(plain, False), rtol=1e-6, atol=1e-6)
    assert not np.allclose(logits(dropped, True), logits(plain, True), atol=1e-3)
