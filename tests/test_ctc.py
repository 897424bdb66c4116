"""CTC forward scores against brute force over every alignment."""

from __future__ import annotations

import itertools

import numpy as np

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
    # The beam ranks every candidate by prefix_scores and computes states only for the kept
    # ones: together they must be exactly extend (token 2 repeats the prefix's last label).
    from assistant.ctc import CtcPrefixScorer, Extensions, Prefixes

    rng = np.random.default_rng(4)
    logits = rng.normal(size=(12, 6))
    scorer = CtcPrefixScorer(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    r_n, r_b = scorer.initial()
    _, r_n, r_b = scorer.extend(r_n[None], r_b[None], np.array([-1]), np.array([True]), [2])
    m = 5
    r_n, r_b = np.repeat(r_n, m, 0), np.repeat(r_b, m, 0)
    last, empty, tokens = np.full(m, 2), np.zeros(m, bool), np.array([0, 1, 2, 3, 4])
    prefix, new_n, new_b = scorer.extend(r_n, r_b, last, empty, tokens)
    # As a beam holds them: one live prefix, extended by every token.
    prefixes = Prefixes(r_b[:1], np.logaddexp(r_n, r_b)[:1], last[:1])
    ext = Extensions(prefixes, np.zeros(m, dtype=np.int64), tokens)
    np.testing.assert_array_equal(scorer.prefix_scores(ext), prefix)
    kept = np.array([3, 1])
    states = scorer.states(ext[kept])
    np.testing.assert_array_equal(states[0], new_n[kept])
    np.testing.assert_array_equal(states[1], new_b[kept])


def test_best_path_tokens_merge_repeats_and_drop_blanks() -> None:
    blank = 3
    frames = [0, 0, blank, 0, 1, 1, blank, blank, 2]
    log_probs = np.log(np.full((len(frames), 4), 0.1))
    log_probs[np.arange(len(frames)), frames] = np.log(0.7)
    # "0 0" with a blank between them are two labels; "1 1" side by side is one.
    assert best_path_tokens(log_probs) == [0, 0, 1, 2]
    assert best_path_tokens(log_probs[[2, 6]]) == []
