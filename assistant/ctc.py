"""CTC scores from the encoder's CTC head: a second, alignment-based opinion on each grammar
hypothesis. Attention decoders can drop or repeat a phone and still score well; CTC cannot,
so adding its score re-ranks the N-best, and its gap to the best unconstrained CTC path is a
strong sign of speech the grammar does not cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

try:
    from . import _searchc
except ImportError as exc:  # a source tree used without installing it
    raise ImportError(
        "assistant._searchc (assistant/_searchc.c) is not built: install the package "
        "(pip install -e . in the source tree; it needs a C compiler and the Python headers)"
    ) from exc

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
class CtcState:
    """The CTC state of n prefixes, one row [2T + 1] each: N [T] (its paths ending in its
    last label), B [T] (ending in blank) and a scale k, as probabilities scaled to stay in
    range: log P = log N[t] + S[t] + k, with S[t] the best path's log-prob up to frame t
    (CtcPrefixScorer.best_to). Indexing selects prefixes."""

    data: np.ndarray  # [n, 2T + 1] float64

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, sel) -> CtcState:
        return CtcState(np.ascontiguousarray(self.data[sel]))


class CtcPrefixScorer:
    """CTC prefix scores for a beam search (Watanabe et al., "Hybrid CTC/attention", 2017):
    the probability that the audio's transcript *starts with* a prefix. Each prefix carries
    its paths over time (CtcState) and its last label (-1: the empty prefix).

    The recursions run in C (``assistant/_searchc.c``, where the why is), on probabilities
    scaled per frame by the best path, so that a frame costs a few multiply-adds. The tables
    it reads are laid out once per utterance.
    """

    def __init__(self, log_probs: np.ndarray):
        self.x = np.asarray(log_probs, dtype=np.float64)  # [T, V + 1], blank last
        self.blank = self.x.shape[1] - 1
        frames, width = self.x.shape
        best = self.x.max(axis=1)
        self.best_to = np.cumsum(best)  # S[t]: the best path's log-prob up to frame t
        scaled = np.exp(self.x - best[:, None]).T  # P [V + 1, T]
        onward = np.zeros((width, frames))  # Q [V + 1, T]: exp(S[t - 1] + x[t, c])
        onward[:, 1:] = np.exp(self.best_to[:-1, None] + self.x[1:]).T
        self.tables = np.concatenate([scaled.ravel(), onward.ravel(), self.x[0], self.best_to])
        # The empty prefix (every path is blanks), the start of every search of the utterance;
        # states are never changed in place, so one serves them all.
        paths = np.exp(np.cumsum(self.x[:, self.blank]) - self.best_to)
        top = paths.max()
        self._empty = CtcState(np.concatenate([np.zeros(frames), paths / top, [np.log(top)]])[None])

    @property
    def frames(self) -> int:
        return len(self.x)

    @property
    def sizes(self) -> tuple[int, int]:
        """(frames, token rows with the blank): the tables' shape the compiled calls take."""
        return self.frames, self.x.shape[1]

    def initial(self) -> CtcState:
        """The empty prefix: every path is blanks."""
        return self._empty

    def prefix_scores(self, state: CtcState, last, rows, tokens) -> np.ndarray:
        """log P(transcript starts with g + c) [M] for prefixes ``rows`` of ``state`` (last
        labels ``last``) extended by label ``tokens`` (not </s>): over the frame t at which
        c is first emitted, (paths of g up to t - 1) x (c at t), plus c at frame 0 when g
        is empty."""
        last, rows, tokens = self._check(state, last), _int64(rows), _int64(tokens)
        out = np.empty(len(rows))
        _searchc.prefix_scores(
            state.data, last, rows, tokens, self.tables, len(last), len(rows), *self.sizes, out
        )
        return out

    def advance(self, state: CtcState, last, rows, tokens) -> CtcState:
        """The states of prefixes ``rows`` extended by label ``tokens``: what a beam keeps
        of the few prefixes it lets live (the ranking needs only prefix_scores)."""
        last, rows, tokens = self._check(state, last), _int64(rows), _int64(tokens)
        out = np.empty((len(rows), 2 * self.frames + 1))
        _searchc.advance(
            state.data, last, rows, tokens, self.tables, len(last), len(rows), *self.sizes, out
        )
        return CtcState(out)

    def final(self, state: CtcState) -> np.ndarray:
        """log P(transcript == prefix) [n]: the end-of-sentence score."""
        t = self.frames
        paths = state.data[:, t - 1] + state.data[:, 2 * t - 1]
        with np.errstate(divide="ignore"):
            scores = np.log(paths) + self.best_to[-1] + state.data[:, 2 * t]
        return np.where(paths > 0, scores, NEG_INF)

    def log_paths(self, state: CtcState) -> tuple[np.ndarray, np.ndarray]:
        """(log P of the paths ending in the last label, ending in blank) [n, T], NEG_INF
        where there is none: the arrays of the textbook recursion."""
        t = self.frames
        offset = self.best_to[None] + state.data[:, 2 * t, None]
        with np.errstate(divide="ignore"):
            r_n = np.log(state.data[:, :t]) + offset
            r_b = np.log(state.data[:, t : 2 * t]) + offset
        return np.maximum(r_n, NEG_INF), np.maximum(r_b, NEG_INF)

    def _check(self, state: CtcState, last, n: int | None = None) -> np.ndarray:
        last = _int64(last)
        n = len(last) if n is None else n
        if not len(state) == len(last) == n or state.data.shape[1] != 2 * self.frames + 1:
            raise ValueError(
                f"{n} prefixes of {self.frames} frames expected: state {state.data.shape}, "
                f"last {last.shape}"
            )
        return last


def _int64(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64).reshape(-1)
