"""CTC scores from the encoder's CTC head: a second, alignment-based opinion on each grammar
hypothesis. Attention decoders can drop or repeat a phone and still score well; CTC cannot,
so adding its score re-ranks the N-best, and its gap to the best unconstrained CTC path is a
strong sign of speech the grammar does not cover.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NEG_INF = -1e30


def ctc_log_likelihoods(log_probs: np.ndarray, labels: Sequence[Sequence[int]]) -> np.ndarray:
    """log P(labels | audio) for several label sequences at once (forward algorithm, batched
    over hypotheses). log_probs: [T, V + 1] with the blank last; labels: token ids (no blank).
    """
    t_steps, width = log_probs.shape
    blank = width - 1
    n = len(labels)
    if n == 0:
        return np.zeros(0)
    longest = max(len(label) for label in labels)
    states = 2 * longest + 1
    # Extended label sequences: blank, l1, blank, l2, ..., blank (padded with blanks).
    ext = np.full((n, states), blank, dtype=np.int64)
    valid = np.zeros((n, states), dtype=bool)
    skip = np.zeros((n, states), dtype=bool)  # may jump over the blank before this state
    for i, label in enumerate(labels):
        ext[i, 1 : 2 * len(label) : 2] = label
        valid[i, : 2 * len(label) + 1] = True
        for s in range(3, 2 * len(label), 2):
            skip[i, s] = label[(s - 1) // 2] != label[(s - 3) // 2]
    alpha = np.full((n, states), NEG_INF)
    emit = log_probs[0][ext]
    alpha[:, 0] = emit[:, 0]
    alpha[:, 1] = np.where(valid[:, 1], emit[:, 1], NEG_INF)
    for t in range(1, t_steps):
        prev1 = np.concatenate([np.full((n, 1), NEG_INF), alpha[:, :-1]], axis=1)
        prev2 = np.concatenate([np.full((n, 2), NEG_INF), alpha[:, :-2]], axis=1)
        prev2 = np.where(skip, prev2, NEG_INF)
        alpha = np.logaddexp(np.logaddexp(alpha, prev1), prev2) + log_probs[t][ext]
        alpha = np.where(valid, alpha, NEG_INF)
    ends = np.array([2 * len(label) for label in labels])
    last = alpha[np.arange(n), ends]
    before = np.where(ends > 0, alpha[np.arange(n), np.maximum(ends - 1, 0)], NEG_INF)
    return np.logaddexp(last, before)


def best_path_log_prob(log_probs: np.ndarray) -> float:
    """Score of the single best CTC path with no constraint: what any transcript could get."""
    return float(log_probs.max(axis=1).sum())
