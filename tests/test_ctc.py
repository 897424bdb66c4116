"""CTC forward scores against brute force over every alignment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from assistant.ctc import (
    CtcState,
    best_path_log_prob,
    best_path_tokens,
    ctc_log_likelihoods,
)


def collapse(path: tuple[int, ...], blank: int) -> tuple[int, ...]:
    out: list[int] = []
    prev = None
    for p in path:
        if p != prev and p != blank:
            out.append(p)
        prev = p
    return tuple(out)


def brute_force(log_probs: np.ndarray, label: tuple[int, ...]) -> float:
    t_steps, width = log_probs.shape
    total = -np.inf
    for path in itertools.product(range(width), repeat=t_steps):
        if collapse(path, width - 1) == label:
            total = np.logaddexp(total, sum(log_probs[t, p] for t, p in enumerate(path)))
    return float(total)


def test_forward_matches_brute_force():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 4))
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    labels = [(0,), (0, 1), (1, 1), (2, 0, 2), ()]
    ours = ctc_log_likelihoods(log_probs, labels)
    for got, label in zip(ours, labels, strict=True):
        assert abs(got - brute_force(log_probs, label)) < 1e-9


def test_impossible_label_is_minus_infinity():
    log_probs = np.log(np.full((2, 3), 1 / 3))
    # Three labels cannot fit into two frames.
    assert ctc_log_likelihoods(log_probs, [(0, 1, 0)])[0] < -1e20


def test_best_path_bounds_every_label():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 4))
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    best = best_path_log_prob(log_probs)
    for label in [(0,), (1, 2), (2, 2)]:
        # One path can't beat the best path; a label's many paths together can, a little.
        assert ctc_log_likelihoods(log_probs, [label])[0] <= best + np.log(4**6)


def _scorer(seed: int, frames: int, width: int):
    from assistant.ctc import CtcPrefixScorer

    logits = np.random.default_rng(seed).normal(size=(frames, width))
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return log_probs, CtcPrefixScorer(log_probs)


def _grow(scorer, label):
    """The state of ``label`` as a beam reaches it, one token a step."""
    state, last = scorer.initial(), -1
    for token in label:
        state, last = scorer.advance(state, [last], [0], [token]), token
    return state


def test_prefix_scorer_agrees_with_forward_and_sums_to_one():
    log_probs, scorer = _scorer(3, 9, 5)
    for label in ([1, 2, 2, 3], [0], [3, 3, 0]):
        state = _grow(scorer, label)
        assert abs(scorer.final(state)[0] - ctc_log_likelihoods(log_probs, [label])[0]) < 1e-9
    # Every transcript is empty or starts with some label: the probabilities sum to one.
    empty = scorer.initial()
    width = 4
    first = scorer.prefix_scores(empty, [-1], np.zeros(width), np.arange(width))
    total = np.logaddexp(np.logaddexp.reduce(first), scorer.final(empty)[0])
    assert abs(total) < 1e-9
    # And so from any prefix: it ends here or goes on with some label.
    g = _grow(scorer, [1, 2])
    onward = scorer.prefix_scores(g, [2], np.zeros(width), np.arange(width))
    own = scorer.prefix_scores(_grow(scorer, [1]), [1], [0], [2])[0]
    assert abs(np.logaddexp(np.logaddexp.reduce(onward), scorer.final(g)[0]) - own) < 1e-9


def test_ranking_scores_and_states_read_the_live_prefixes_rows():
    # A beam ranks every candidate by prefix_scores and advances only the kept ones, both
    # reading the live prefixes' rows: the same as each prefix on its own (token 2 repeats
    # the prefix's last label).
    _, scorer = _scorer(4, 12, 6)
    one = _grow(scorer, [2])
    live = CtcState(np.concatenate([_grow(scorer, [3]).data, one.data]))
    tokens = np.array([0, 1, 2, 3, 4])
    rows = np.ones(len(tokens), dtype=np.int64)
    alone = scorer.prefix_scores(one, [2], np.zeros(5), tokens)
    np.testing.assert_array_equal(scorer.prefix_scores(live, [3, 2], rows, tokens), alone)
    kept = np.array([3, 1])
    np.testing.assert_array_equal(
        scorer.advance(live, [3, 2], rows[kept], tokens[kept]).data,
        scorer.advance(one, [2], [0, 0], tokens[kept]).data,
    )


def test_prefix_scores_match_a_frame_by_frame_recursion() -> None:
    # The textbook recursion over frames in log-probs (Watanabe et al. 2017, Algorithm 2),
    # written out here in plain Python, against the compiled step on scaled probabilities,
    # for a prefix grown token by token through a repeat.
    from assistant.ctc import NEG_INF

    x, scorer = _scorer(9, 15, 5)
    blank, frames = 4, 15
    gamma_n, gamma_b = np.full(frames, -np.inf), np.cumsum(x[:, blank])  # the empty prefix
    state, last = scorer.initial(), -1
    for c in [1, 3, 3, 0]:
        psi = x[0, c] if last < 0 else -np.inf
        new_n, new_b = np.full(frames, -np.inf), np.full(frames, -np.inf)
        new_n[0] = psi
        for t in range(1, frames):
            phi = gamma_b[t - 1] if c == last else np.logaddexp(gamma_n[t - 1], gamma_b[t - 1])
            new_n[t] = np.logaddexp(new_n[t - 1], phi) + x[t, c]
            new_b[t] = np.logaddexp(new_n[t - 1], new_b[t - 1]) + x[t, blank]
            psi = np.logaddexp(psi, phi + x[t, c])
        assert scorer.prefix_scores(state, [last], [0], [c])[0] == pytest.approx(psi, abs=1e-9)
        state = scorer.advance(state, [last], [0], [c])
        r_n, r_b = scorer.log_paths(state)
        np.testing.assert_allclose(r_n[0], np.maximum(new_n, NEG_INF), rtol=1e-12)
        np.testing.assert_allclose(r_b[0], np.maximum(new_b, NEG_INF), rtol=1e-12)
        gamma_n, gamma_b, last = new_n, new_b, c


def test_long_utterances_keep_their_scores_where_probabilities_underflow() -> None:
    # Over 800 frames every path's probability is far below the smallest double (e^-745);
    # the scaled state still gives the forward algorithm's log-likelihood.
    log_probs, scorer = _scorer(5, 800, 6)
    label = [0, 3, 1, 1, 4, 2] * 6
    state = _grow(scorer, label)
    expected = ctc_log_likelihoods(log_probs, [label])[0]
    assert expected < -1000
    assert scorer.final(state)[0] == pytest.approx(expected, rel=1e-12)


def test_an_impossible_prefix_scores_neg_inf() -> None:
    # Four labels that must be told apart by blanks ("1 1 1 1") cannot fit into 5 frames.
    from assistant.ctc import NEG_INF

    _, scorer = _scorer(6, 5, 4)
    state = _grow(scorer, [1, 1, 1])
    assert scorer.prefix_scores(state, [1], [0], [1])[0] == NEG_INF
    assert scorer.final(_grow(scorer, [1, 1, 1, 1]))[0] == NEG_INF


def test_compiled_step_refuses_arrays_that_do_not_fit() -> None:
    # A wrong call is a ValueError naming the array, never a read past the end of one.
    from assistant import _searchc

    _, scorer = _scorer(2, 10, 6)
    empty = scorer.initial()
    with pytest.raises(ValueError, match="prefix row"):
        scorer.prefix_scores(empty, [-1], [1], [2])
    with pytest.raises(ValueError, match="token"):
        scorer.advance(empty, [-1], [0], [5])  # the blank is not a label
    out = np.empty(1)
    rows = [np.array([v], np.int64) for v in (-1, 0, 2)]  # int64 as the scorer passes them
    args = (*rows, scorer.tables, 1, 1, 10, 6, out)
    with pytest.raises(ValueError, match="state: expected float64"):
        _searchc.prefix_scores(empty.data.astype(np.float32), *args)
    with pytest.raises(ValueError, match="state: expected 21 items, got 42"):
        _searchc.prefix_scores(np.concatenate([empty.data] * 2), *args)
    with pytest.raises(ValueError, match="tables: expected"):
        _searchc.prefix_scores(empty.data, *args[:3], scorer.tables[:-1], *args[4:])


def test_best_path_tokens_merge_repeats_and_drop_blanks() -> None:
    blank = 3
    frames = [0, 0, blank, 0, 1, 1, blank, blank, 2]
    log_probs = np.log(np.full((len(frames), 4), 0.1))
    log_probs[np.arange(len(frames)), frames] = np.log(0.7)
    # "0 0" with a blank between them are two labels; "1 1" side by side is one.
    assert best_path_tokens(log_probs) == [0, 0, 1, 2]
    assert best_path_tokens(log_probs[[2, 6]]) == []
