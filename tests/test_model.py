"""The graphs the runtime uses compute what training computes: one decoder step for a beam of
rows (sharing one utterance's encoder states) gives, per row, the teacher-forced output, and
the export's own GRU loop gives what Keras's bidirectional GRU layers give."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tools.model import ModelConfig, subsampled_length  # noqa: E402
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


def test_exported_encoder_computes_the_keras_encoder():
    from tools.export import EncoderExport

    rng = np.random.default_rng(2)
    model = build_model(CONFIG)
    frames = 40
    feats = rng.standard_normal((1, frames, CONFIG.n_mels)).astype(np.float32)
    exported = EncoderExport(model, frames).encode(feats)
    enc, keys = model.encode(feats)
    np.testing.assert_allclose(exported["enc"].numpy(), enc.numpy(), atol=1e-5)
    np.testing.assert_allclose(exported["keys"].numpy(), keys.numpy(), atol=1e-5)


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
