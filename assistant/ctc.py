"""CTC scores from the encoder's CTC head: a second, alignment-based opinion on each grammar
hypothesis. Attention decoders can drop or repeat a phone and still score well; CTC cannot,
so adding its score re-ranks the N-best, and its gap to the best unconstrained CTC path is a
strong sign of speech the grammar does not cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import _ctcstep

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


def best_path_tokens(log_probs: np.ndarray) -> list[int]:
    """The tokens of that best path: the likeliest label of each frame, repeats merged and
    blanks dropped (greedy CTC decoding, no grammar)."""
    best = log_probs.argmax(axis=1)
    changed = np.concatenate([[True], best[1:] != best[:-1]])
    return [int(t) for t in best[changed & (best != log_probs.shape[1] - 1)]]


class CtcPrefixScorer:
    """CTC prefix scores for a beam search (Watanabe et al., "Hybrid CTC/attention", 2017):
    the probability that the audio's transcript *starts with* a prefix. Each prefix carries
    two arrays over time, r_n (paths ending in its last label) and r_b (ending in blank),
    and its last label (-1: the empty prefix).

    The recursions run in C (``assistant/_ctcstep.c``: a search step is many small array
    operations, whose fixed cost numpy pays each time). Each token's log-probs and their
    running sums over time are laid out once per utterance as rows [V + 1, T].
    """

    def __init__(self, log_probs: np.ndarray):
        self.x = np.asarray(log_probs, dtype=np.float64)  # [T, V + 1], blank last
        self.blank = self.x.shape[1] - 1
        self.cum_blank = np.cumsum(self.x[:, self.blank])
        self.by_token = np.ascontiguousarray(self.x.T)  # [V + 1, T]
        self.cum_by_token = np.cumsum(self.by_token, axis=1)

    @property
    def frames(self) -> int:
        return len(self.x)

    def initial(self) -> tuple[np.ndarray, np.ndarray]:
        """(r_n, r_b) of the empty prefix, shape [T] each."""
        return np.full(len(self.x), NEG_INF), self.cum_blank.copy()

    def select(
        self,
        total: np.ndarray,
        r_n: np.ndarray,
        r_b: np.ndarray,
        last: np.ndarray,
        beam: int,
        weight: float,
        eos: int,
    ) -> JointStep:
        """One joint search step: the extensions (row, token) of n prefixes ranked by
        (1 - weight) * attention + weight * CTC prefix score, the best 2 * beam that CTC can
        align, best first. total [n, V]: attention log-probs, -inf where the grammar forbids
        a token. A prefix's candidates are its allowed tokens, or only those scoring at
        least its beam-th best by attention when it allows more; </s> (``eos``) is scored
        with all the prefix's paths at the last frame. The first ``beam`` candidates that are
        not </s>, the prefixes the beam keeps, come advanced (``r_n``, ``r_b``)."""
        total = np.ascontiguousarray(total, dtype=np.float64)
        n, vocab = total.shape
        r_n, r_b, last = self._prefixes(r_n, r_b, last, n)
        out = 2 * beam
        rows, toks = np.empty(out, np.int64), np.empty(out, np.int64)
        joint, att, ctc = np.empty(out), np.empty(out), np.empty(out)
        new_n, new_b = np.empty((beam, self.frames)), np.empty((beam, self.frames))
        count = _ctcstep.select(
            total, r_n, r_b, last, self.by_token, self.cum_by_token, self.cum_blank, n, vocab,
            self.frames, len(self.by_token), beam, float(weight), eos, rows, toks, joint, att,
            ctc, new_n, new_b,
        )  # fmt: skip
        live = min(beam, int(np.count_nonzero(toks[:count] != eos)))
        return JointStep(
            rows[:count], toks[:count], joint[:count], att[:count], ctc[:count],
            new_n[:live], new_b[:live],
        )  # fmt: skip

    def prefix_scores(
        self, r_n: np.ndarray, r_b: np.ndarray, last: np.ndarray, rows: np.ndarray, tokens
    ) -> np.ndarray:
        """log P(transcript starts with g + c) [M] for prefixes ``rows`` of (r_n, r_b, last)
        extended by label ``tokens`` (not </s>): over the frame t at which c is first
        emitted, (paths of g up to t - 1) x (c at t), plus c at frame 0 when g is empty."""
        r_n, r_b, last = self._prefixes(r_n, r_b, last)
        rows, tokens = _int64(rows), _int64(tokens)
        out = np.empty(len(rows))
        _ctcstep.prefix_scores(
            r_n, r_b, last, rows, tokens, self.by_token, len(last), len(rows), self.frames,
            len(self.by_token), out,
        )  # fmt: skip
        return out

    def advance(
        self, r_n: np.ndarray, r_b: np.ndarray, last: np.ndarray, rows: np.ndarray, tokens
    ) -> tuple[np.ndarray, np.ndarray]:
        """(r_n, r_b) [M, T] of prefixes ``rows`` extended by label ``tokens``: what a beam
        keeps of the few prefixes it lets live (the ranking needs only prefix_scores)."""
        r_n, r_b, last = self._prefixes(r_n, r_b, last)
        rows, tokens = _int64(rows), _int64(tokens)
        new_n = np.empty((len(rows), self.frames))
        new_b = np.empty((len(rows), self.frames))
        _ctcstep.advance(
            r_n, r_b, last, rows, tokens, self.by_token, self.cum_by_token, self.cum_blank,
            len(last), len(rows), self.frames, len(self.by_token), new_n, new_b,
        )  # fmt: skip
        return new_n, new_b

    def extend(
        self,
        r_n: np.ndarray,
        r_b: np.ndarray,
        last: np.ndarray,
        empty: np.ndarray,
        tokens: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prefix g + c for M (prefix, token) pairs, one prefix per pair. r_n, r_b: [M, T]
        of each g; last: [M] last label of g; empty: [M] whether g is empty; tokens: [M] the
        c. Returns (prefix log-prob of g + c [M], r_n [M, T], r_b [M, T] of g + c)."""
        last = np.where(empty, -1, last)
        rows = np.arange(len(last))
        return (
            self.prefix_scores(r_n, r_b, last, rows, tokens),
            *self.advance(r_n, r_b, last, rows, tokens),
        )

    def _prefixes(
        self, r_n: np.ndarray, r_b: np.ndarray, last: np.ndarray, n: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The prefix arrays as the compiled step reads them: C-contiguous float64 [n, T],
        int64 [n]."""
        r_n = np.ascontiguousarray(r_n, dtype=np.float64).reshape(-1, self.frames)
        r_b = np.ascontiguousarray(r_b, dtype=np.float64).reshape(-1, self.frames)
        last = _int64(last)
        n = len(last) if n is None else n
        if not len(r_n) == len(r_b) == len(last) == n:
            raise ValueError(
                f"{n} prefixes expected: r_n {r_n.shape}, r_b {r_b.shape}, last {last.shape}"
            )
        return r_n, r_b, last

    @staticmethod
    def final(r_n: np.ndarray, r_b: np.ndarray) -> np.ndarray:
        """log P(transcript == prefix) for prefixes [M, T]: the end-of-sentence score."""
        return np.logaddexp(r_n[..., -1], r_b[..., -1])


@dataclass(frozen=True)
class JointStep:
    """A joint step's candidates, best first: the prefix each extends (``rows``), its token,
    the joint score, and its attention and CTC parts; and the time arrays of the first
    ``beam`` that are not </s> (the ones a beam keeps), in that order."""

    rows: np.ndarray
    toks: np.ndarray
    joint: np.ndarray
    att: np.ndarray
    ctc: np.ndarray
    r_n: np.ndarray
    r_b: np.ndarray


def _int64(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64).reshape(-1)
