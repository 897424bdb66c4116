"""CTC forward scores against brute force over every alignment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from assistant.ctc import best_path_log_prob, best_path_tokens, ctc_log_likelihoods


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


def test_prefix_scorer_agrees_with_forward_and_sums_to_one():
    from assistant.ctc import CtcPrefixScorer

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(9, 5))
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    scorer = CtcPrefixScorer(log_probs)
    for label in ([1, 2, 2, 3], [0], [3, 3, 0]):
        r_n, r_b = (a[None] for a in scorer.initial())
        last, empty = np.array([-1]), np.array([True])
        for token in label:
            _, r_n, r_b = scorer.extend(r_n, r_b, last, empty, np.array([token]))
            last, empty = np.array([token]), np.array([False])
        assert abs(scorer.final(r_n, r_b)[0] - ctc_log_likelihoods(log_probs, [label])[0]) < 1e-9
    # Every transcript is empty or starts with some label: the probabilities sum to one.
    r_n, r_b = scorer.initial()
    width = 4
    first, _, _ = scorer.extend(
        np.repeat(r_n[None], width, 0),
        np.repeat(r_b[None], width, 0),
        np.full(width, -1),
        np.ones(width, bool),
        np.arange(width),
    )
    total = np.logaddexp(np.logaddexp.reduce(first), scorer.final(r_n, r_b))
    assert abs(total) < 1e-9


def test_ranking_scores_and_time_arrays_are_extend_split_in_two():
    # The beam ranks every candidate by prefix_scores and advances only the kept ones, both
    # reading the live prefixes' rows: together they must be exactly extend, which takes one
    # prefix per pair (token 2 repeats the prefix's last label).
    from assistant.ctc import CtcPrefixScorer

    rng = np.random.default_rng(4)
    logits = rng.normal(size=(12, 6))
    scorer = CtcPrefixScorer(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    r_n, r_b = scorer.initial()
    _, r_n, r_b = scorer.extend(r_n[None], r_b[None], np.array([-1]), np.array([True]), [2])
    m = 5
    last, empty, tokens = np.full(m, 2), np.zeros(m, bool), np.array([0, 1, 2, 3, 4])
    prefix, new_n, new_b = scorer.extend(
        np.repeat(r_n, m, 0), np.repeat(r_b, m, 0), last, empty, tokens
    )
    # As a beam holds them: one live prefix, extended by every token.
    rows = np.zeros(m, dtype=np.int64)
    np.testing.assert_array_equal(scorer.prefix_scores(r_n, r_b, last[:1], rows, tokens), prefix)
    kept = np.array([3, 1])
    states = scorer.advance(r_n, r_b, last[:1], rows[kept], tokens[kept])
    np.testing.assert_array_equal(states[0], new_n[kept])
    np.testing.assert_array_equal(states[1], new_b[kept])


def test_prefix_scores_match_a_frame_by_frame_recursion() -> None:
    # The textbook recursion over frames (Watanabe et al. 2017, Algorithm 2), written out
    # here in plain Python, against the compiled step, for a prefix grown token by token
    # through a repeat.
    from assistant.ctc import NEG_INF, CtcPrefixScorer

    rng = np.random.default_rng(9)
    logits = rng.normal(size=(15, 5))
    x = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    blank, T = 4, 15
    scorer = CtcPrefixScorer(x)
    gamma_n, gamma_b = np.full(T, NEG_INF), np.cumsum(x[:, blank])  # the empty prefix
    r_n, r_b = scorer.initial()
    last = -1
    for c in [1, 3, 3, 0]:
        psi = x[0, c] if last < 0 else NEG_INF
        new_n = np.full(T, NEG_INF)
        new_b = np.full(T, NEG_INF)
        new_n[0] = psi
        for t in range(1, T):
            phi = gamma_b[t - 1] if c == last else np.logaddexp(gamma_n[t - 1], gamma_b[t - 1])
            new_n[t] = np.logaddexp(new_n[t - 1], phi) + x[t, c]
            new_b[t] = np.logaddexp(new_n[t - 1], new_b[t - 1]) + x[t, blank]
            psi = np.logaddexp(psi, phi + x[t, c])
        got = scorer.prefix_scores(r_n, r_b, [last], [0], [c])[0]
        assert got == pytest.approx(psi, abs=1e-9)
        r_n, r_b = scorer.advance(r_n, r_b, [last], [0], [c])
        np.testing.assert_allclose(np.maximum(new_n, NEG_INF), r_n[0], rtol=1e-12)
        np.testing.assert_allclose(np.maximum(new_b, NEG_INF), r_b[0], rtol=1e-12)
        gamma_n, gamma_b, last = new_n, new_b, c


def test_compiled_step_refuses_arrays_that_do_not_fit() -> None:
    # A wrong call is a ValueError naming the array, never a read past the end of one.
    from assistant import _ctcstep
    from assistant.ctc import CtcPrefixScorer

    rng = np.random.default_rng(2)
    scorer = CtcPrefixScorer(np.log(rng.dirichlet(np.ones(6), size=10)))
    r_n, r_b = scorer.initial()
    with pytest.raises(ValueError, match="prefix row"):
        scorer.prefix_scores(r_n, r_b, [-1], [1], [2])
    with pytest.raises(ValueError, match="token"):
        scorer.advance(r_n, r_b, [-1], [0], [6])
    with pytest.raises(ValueError, match="prefixes expected"):
        scorer.select(np.zeros((2, 5)), r_n, r_b, [-1], 3, 0.5, 1)
    out = np.empty(1)
    with pytest.raises(ValueError, match="r_b: expected float64"):
        _ctcstep.prefix_scores(
            r_n, r_b.astype(np.float32), np.array([-1]), np.array([0]), np.array([2]),
            scorer.by_token, 1, 1, 10, 6, out,
        )  # fmt: skip
    with pytest.raises(ValueError, match="by_token: expected 60 items, got 50"):
        _ctcstep.prefix_scores(
            r_n, r_b, np.array([-1]), np.array([0]), np.array([2]), scorer.by_token[:5], 1, 1,
            10, 6, out,
        )  # fmt: skip


def test_best_path_tokens_merge_repeats_and_drop_blanks() -> None:
    blank = 3
    frames = [0, 0, blank, 0, 1, 1, blank, blank, 2]
    log_probs = np.log(np.full((len(frames), 4), 0.1))
    log_probs[np.arange(len(frames)), frames] = np.log(0.7)
    # "0 0" with a blank between them are two labels; "1 1" side by side is one.
    assert best_path_tokens(log_probs) == [0, 0, 1, 2]
    assert best_path_tokens(log_probs[[2, 6]]) == []
