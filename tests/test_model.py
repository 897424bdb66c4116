"""The decoder step the runtime uses computes what training computes: one step for a beam of
rows (sharing one utterance's encoder states) gives, per row, the teacher-forced output."""

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
