"""CTC scores from the encoder's CTC head: a second, alignment-based opinion on each grammar
hypothesis. Attention decoders can drop or repeat a phone and still score well; CTC cannot,
so adding its score re-ranks the N-best, and its gap to the best unconstrained CTC path is a
strong sign of speech the grammar does not cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def best_path_tokens(log_probs: np.ndarray) -> list[int]:
    """The tokens of that best path: the likeliest label of each frame, repeats merged and
    blanks dropped (greedy CTC decoding, no grammar)."""
    best = log_probs.argmax(axis=1)
    changed = np.concatenate([[True], best[1:] != best[:-1]])
    return [int(t) for t in best[changed & (best != log_probs.shape[1] - 1)]]


@dataclass(frozen=True)
class Prefixes:
    """The n live prefixes g that candidates extend: paths ending in blank ``r_b`` [n, T],
    all paths ``either`` = logaddexp(r_n, r_b) [n, T], and the last label [n] (-1: empty)."""

    r_b: np.ndarray
    either: np.ndarray
    last: np.ndarray


@dataclass(frozen=True)
class Extensions:
    """M candidate extensions g + c: the prefix each extends (a row of ``prefixes``) and its
    token c. Indexing selects candidates: a beam ranks them all (``prefix_scores``), then
    advances the time arrays (``states``, most of the cost) of the few it keeps."""

    prefixes: Prefixes
    rows: np.ndarray
    tokens: np.ndarray

    def __getitem__(self, sel: np.ndarray) -> Extensions:
        return Extensions(self.prefixes, self.rows[sel], self.tokens[sel])

    @property
    def repeats(self) -> np.ndarray:
        """Whether c repeats g's last label: then only paths ending in blank may precede it."""
        return self.prefixes.last[self.rows] == self.tokens

    @property
    def empty(self) -> np.ndarray:
        return self.prefixes.last[self.rows] < 0


class CtcPrefixScorer:
    """CTC prefix scores for a beam search (Watanabe et al., "Hybrid CTC/attention", 2017):
    the probability that the audio's transcript *starts with* a prefix. Each prefix carries
    two arrays over time (paths ending in the last label, paths ending in blank). The time
    recursions are linear, so they are computed with cumulative sums and
    ``np.logaddexp.accumulate`` instead of a Python loop over frames, for many candidate
    extensions at once.

    Each token's log-probs and their running sums over time are laid out once per utterance
    as rows [V + 1, T], so a search step gathers contiguous rows.
    """

    def __init__(self, log_probs: np.ndarray):
        self.x = np.asarray(log_probs, dtype=np.float64)  # [T, V + 1], blank last
        self.blank = self.x.shape[1] - 1
        self.cum_blank = np.cumsum(self.x[:, self.blank])
        self.by_token = np.ascontiguousarray(self.x.T)  # [V + 1, T]
        self.cum_by_token = np.cumsum(self.by_token, axis=1)

    def initial(self) -> tuple[np.ndarray, np.ndarray]:
        """(r_nonblank, r_blank) of the empty prefix, shape [T] each."""
        return np.full(len(self.x), NEG_INF), self.cum_blank.copy()

    def extend(
        self,
        r_n: np.ndarray,
        r_b: np.ndarray,
        last: np.ndarray,
        empty: np.ndarray,
        tokens: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prefix g + c for M (prefix, token) pairs. r_n, r_b: [M, T] of each g; last: [M]
        last label of g; empty: [M] whether g is empty; tokens: [M] the c. Returns
        (prefix log-prob of g + c [M], r_n [M, T], r_b [M, T] of g + c)."""
        prefixes = Prefixes(r_b, np.logaddexp(r_n, r_b), np.where(empty, -1, last))
        ext = Extensions(prefixes, np.arange(len(r_b)), np.asarray(tokens))
        return self.prefix_scores(ext), *self.states(ext)

    def prefix_scores(self, ext: Extensions) -> np.ndarray:
        """log P(transcript starts with g + c), [M]: over the frame t at which c is first
        emitted, (paths of g up to t - 1) x (c at t), plus c at frame 0 when g is empty."""
        scores = _logsumexp(self._before(ext)[:, :-1] + self.by_token[ext.tokens, 1:], axis=1)
        empty = ext.empty
        if empty.any():  # the first step only: logaddexp with NEG_INF changes nothing
            scores = np.logaddexp(np.where(empty, self.x[0, ext.tokens], NEG_INF), scores)
        return scores

    def states(self, ext: Extensions) -> tuple[np.ndarray, np.ndarray]:
        """(r_n, r_b) of g + c, [M, T] each."""
        xc, cum_c = self.by_token[ext.tokens], self.cum_by_token[ext.tokens]
        new_n = np.empty_like(xc)
        new_b = np.full_like(xc, NEG_INF)
        empty = ext.empty
        new_n[:, 0] = np.where(empty, xc[:, 0], NEG_INF)
        if xc.shape[1] > 1:
            # Paths that emit c first at frame t, divided by c's running product, summed up
            # to t; a start at frame 0 (empty g) joins the first term.
            first = self._before(ext)[:, :-1] - cum_c[:, :-1]
            if empty.any():
                first[:, 0] = np.logaddexp(first[:, 0], new_n[:, 0] - cum_c[:, 0])
            new_n[:, 1:] = cum_c[:, 1:] + np.logaddexp.accumulate(first, axis=1)
            acc_b = np.logaddexp.accumulate(new_n[:, :-1] - self.cum_blank[None, :-1], axis=1)
            new_b[:, 1:] = self.cum_blank[None, 1:] + acc_b
        return np.maximum(new_n, NEG_INF), np.maximum(new_b, NEG_INF)

    @staticmethod
    def _before(ext: Extensions) -> np.ndarray:
        """[M, T]: the paths of g that c may follow: all of them, or only those ending in
        blank when c repeats g's last label (CTC merges repeats not split by a blank)."""
        p = ext.prefixes
        phi = p.either[ext.rows]
        repeats = ext.repeats
        if repeats.any():  # rare: grammars seldom allow a phone twice in a row
            phi[repeats] = p.r_b[ext.rows[repeats]]
        return phi

    @staticmethod
    def final(r_n: np.ndarray, r_b: np.ndarray) -> np.ndarray:
        """log P(transcript == prefix) for prefixes [M, T]: the end-of-sentence score."""
        return np.logaddexp(r_n[..., -1], r_b[..., -1])


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    if a.shape[axis] == 0:
        return np.full(a.shape[:axis] + a.shape[axis + 1 :], NEG_INF)
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.squeeze(top, axis=axis) + np.log(np.sum(np.exp(a - top), axis=axis))
