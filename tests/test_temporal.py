"""The temporal-consistency kernel: Viterbi decoding of per-pixel mining sequences against a brute-force oracle."""

from __future__ import annotations

import itertools
import math

import array_api_strict
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtg.kernels.temporal import EPS, viterbi_mining

START, STOP = 0.3, 0.1


def path_score(probability: np.ndarray, states: np.ndarray, start: float, stop: float) -> float:
    """Total log-weight of one state sequence under the kernel's model."""
    score = 0.0
    for t, (p, on) in enumerate(zip(probability, states)):
        if not math.isnan(p):
            p = min(max(p, EPS), 1.0 - EPS)
            score += math.log(p) if on else math.log1p(-p)
        if t:
            if on != states[t - 1]:
                score += math.log(stop if states[t - 1] else start)
    return score


def best_paths(probability: np.ndarray, start: float, stop: float) -> tuple[float, list[tuple[bool, ...]]]:
    """The oracle: the best score over all 2**T sequences and the sequences within 1e-9 of it."""
    scored = [(path_score(probability, s, start, stop), s)
              for s in itertools.product((False, True), repeat=len(probability))]
    best = max(score for score, _ in scored)
    return best, [s for score, s in scored if score > best - 1e-9]


def test_one_period_flicker_is_undone_and_a_lasting_change_kept():
    seq = np.array([[0.9, 0.2, 0.95, 0.9],     # a cloud-dimmed year inside a working mine
                    [0.1, 0.1, 0.8, 0.9],      # a mine that opens in the third period
                    [0.9, 0.9, 0.1, 0.05],     # revegetation from the third period on
                    [0.1, 0.97, 0.1, 0.1],     # one weak false alarm
                    [0.8, np.nan, np.nan, 0.9],  # unseen years between two mining years
                    [np.nan] * 4], dtype=np.float32).T
    states = viterbi_mining(seq, START, STOP)
    expected = np.array([[1, 1, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]],
                        dtype=bool).T
    np.testing.assert_array_equal(states, expected)


def test_strong_single_period_evidence_survives_and_stopping_needs_more_than_starting():
    """A one-period change needs more than both switches' evidence: -log 0.3 - log 0.1 = 3.5 nats."""
    strong = np.array([0.01, 0.99, 0.01])[:, None]
    assert viterbi_mining(strong, START, STOP)[:, 0].tolist() == [False, True, False]
    assert viterbi_mining(strong, 0.01, 0.01)[:, 0].tolist() == [False, False, False]
    assert viterbi_mining(np.array([[0.2], [0.8]]), START, STOP)[:, 0].tolist() == [False, True]  # opens at 0.8
    assert viterbi_mining(np.array([[0.2], [0.75]]), START, STOP)[:, 0].tolist() == [False, False]
    assert viterbi_mining(np.array([[0.8], [0.2]]), START, STOP)[:, 0].tolist() == [True, True]  # stays at 0.2
    assert viterbi_mining(np.array([[0.95], [0.05]]), START, STOP)[:, 0].tolist() == [True, False]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.floats(0.0, 1.0), st.just(math.nan)), min_size=1, max_size=7),
       st.floats(0.001, 0.999), st.floats(0.001, 0.999))
def test_viterbi_is_the_best_path(values, start, stop):
    probability = np.array(values, dtype=np.float64)
    decoded = viterbi_mining(probability[:, None], start, stop)[:, 0]
    best, ties = best_paths(probability, start, stop)
    assert path_score(probability, tuple(decoded), start, stop) == pytest.approx(best, abs=1e-7)
    if len(ties) == 1:
        assert tuple(bool(v) for v in decoded) == ties[0]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 20), st.integers(0, 2**32 - 1))
def test_pixels_are_independent_and_array_api_strict_agrees(n_periods, n_pixels, seed):
    rng = np.random.default_rng(seed)
    probability = rng.uniform(size=(n_periods, n_pixels, 2)).astype(np.float32)
    probability[rng.uniform(size=probability.shape) < 0.2] = np.nan
    together = viterbi_mining(probability, START, STOP)
    for i in range(n_pixels):
        np.testing.assert_array_equal(together[:, i, :], viterbi_mining(probability[:, i, :], START, STOP))
    strict = viterbi_mining(array_api_strict.asarray(probability), START, STOP)
    np.testing.assert_array_equal(np.from_dlpack(strict), together)


def test_switch_outside_its_range_is_refused():
    with pytest.raises(ValueError, match="stop weight"):
        viterbi_mining(np.zeros((2, 1)), 0.3, 1.0)
