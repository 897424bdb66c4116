"""A deterministic numpy stand-in for the TFLite decoder step, for decoder tests."""

from __future__ import annotations

import numpy as np

from assistant.lexicon import PAD_ID, TOKENS


class FakeStepModel:
    """Prefers one target token sequence; optionally prefers a ``distractor`` token at some
    positions even more. Once fed a token off the target, it is unsure (flat distribution),
    so a search that feeds the wrong tokens or mixes up state rows pays for it.

    State: [position, on_target (1/0)].
    """

    state_size = 2
    vocab_size = len(TOKENS)

    def __init__(
        self,
        target: list[int],
        batch_size: int = 8,
        distractors: dict[int, int] | None = None,
        strength: float = 6.0,
        vocab_size: int = len(TOKENS),
    ) -> None:
        self.vocab_size = vocab_size
        self.target = list(target)
        self.batch_size = batch_size
        self.distractors = distractors or {}
        self.strength = strength
        self.calls = 0

    def _expected(self, pos: int, token: int) -> bool:
        """Was ``token`` (fed at step ``pos``) the target, or the distractor the model liked?"""
        if pos == 0:
            return token == PAD_ID
        if pos > len(self.target):
            return False
        return token in (self.target[pos - 1], self.distractors.get(pos - 1))

    def start(self) -> np.ndarray:
        return np.array([0.0, 1.0], dtype=np.float32)

    def step(self, tokens: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert tokens.shape == (self.batch_size,) and tokens.dtype == np.int32
        assert states.shape == (self.batch_size, self.state_size)
        self.calls += 1
        pos = states[:, 0].astype(int)
        on = states[:, 1] > 0.5
        prev_ok = np.array([self._expected(p, t) for p, t in zip(pos, tokens, strict=True)])
        on = on & prev_ok
        logits = np.zeros((self.batch_size, self.vocab_size), dtype=np.float32)
        for row in np.flatnonzero(on):
            p = pos[row]
            if p < len(self.target):
                logits[row, self.target[p]] = self.strength
            if p in self.distractors:
                logits[row, self.distractors[p]] = self.strength + 2.0
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        new_states = np.stack([pos + 1.0, on.astype(np.float32)], axis=1).astype(np.float32)
        return log_probs.astype(np.float32), new_states
