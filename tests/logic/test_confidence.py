"""Confidence signals and their running aggregates, against a direct NumPy computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aimo_gguf.engine.api import FINISH_LENGTH, FINISH_LOW_CONFIDENCE, Request
from aimo_gguf.engine.confidence import (
    Confidence,
    ConfidenceSettings,
    Tracker,
    token_signals,
)
from aimo_gguf.engine.slot import Slot, StopMatcher

pytestmark = pytest.mark.logic


def direct(logits: np.ndarray, tokens, k: int):
    x = logits.astype(np.float64)
    lp = x - (np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1))[:, None]
    top = np.sort(lp, axis=1)[:, -k:]
    return -(np.exp(top) * top).sum(1), -top.mean(1), lp[np.arange(len(x)), tokens]


@pytest.mark.parametrize("k", [1, 5, 8, 20])
@pytest.mark.parametrize("rows", [1, 3, 16])
def test_token_signals_match_a_direct_computation_and_leave_the_logits_alone(k, rows):
    rng = np.random.default_rng(rows * 100 + k)
    logits = (rng.standard_normal((rows, 5000)) * 4).astype(np.float32)
    logits[0, 7] = logits[0, 8] = logits[0].max() + 3  # a tie at the top
    before = logits.copy()
    tokens = rng.integers(0, 5000, rows)
    got = token_signals(logits, tokens, k, scratch=np.empty((2, 5000), np.float32))
    for a, b in zip(got, direct(before, tokens, k), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert np.array_equal(logits, before)


def test_token_signals_on_a_read_only_view_and_on_no_rows():
    logits = np.arange(40, dtype=np.float32).reshape(2, 20)
    logits.flags.writeable = False
    h, c, lp = token_signals(logits, [19, 0], 5)
    np.testing.assert_allclose(h, direct(logits, [19, 0], 5)[0])
    assert lp[0] > lp[1]
    assert all(len(a) == 0 for a in token_signals(np.zeros((0, 20), np.float32), [], 5))


def test_a_certain_token_has_zero_entropy_and_the_full_distribution_is_not_renormalized():
    logits = np.full((1, 1000), -1e4, dtype=np.float32)
    logits[0, 3] = 0.0
    h, c, lp = token_signals(logits, [3], 5)
    assert h[0] == pytest.approx(0.0, abs=1e-9) and lp[0] == pytest.approx(0.0, abs=1e-9)
    assert c[0] == pytest.approx(4 * 1e4 / 5, rel=1e-6)  # four near-impossible tokens in the top 5
    flat = np.zeros((1, 1000), dtype=np.float32)
    h, c, _ = token_signals(flat, [0], 5)
    # p = 1/1000 each: the top 5 carry 5/1000 of the mass, not 1 (no renormalization).
    assert h[0] == pytest.approx(5 / 1000 * math.log(1000))
    assert c[0] == pytest.approx(math.log(1000))


def aggregates(h, c, lp, group, tail) -> Confidence:
    n = len(h)
    windows = [np.mean(c[j - group:j]) for j in range(group, n + 1)]
    return Confidence(tokens=n, mean_entropy=float(np.mean(h)), mean_confidence=float(np.mean(c)),
                      mean_logprob=float(np.mean(lp)),
                      lowest_group_confidence=float(min(windows)) if windows else float(np.mean(c)),
                      tail_entropy=float(np.mean(h[-tail:])), tail_confidence=float(np.mean(c[-tail:])))


@pytest.mark.parametrize("n, group, tail", [(1, 4, 4), (3, 4, 2), (4, 4, 4), (50, 7, 5), (5000, 64, 300)])
def test_the_tracker_keeps_the_aggregates_of_the_whole_sequence(n, group, tail):
    rng = np.random.default_rng(n)
    h, c, lp = rng.random(n) * 2, rng.random(n) * 5, -rng.random(n)
    tracker = Tracker(ConfidenceSettings(group_window=group, tail_window=tail))
    assert tracker.result() is None and tracker.group_confidence is None
    for values in zip(h, c, lp, strict=True):
        tracker.add(*map(float, values))
    got, want = tracker.result(), aggregates(h, c, lp, group, tail)
    for name in want.__slots__:
        assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-9), name
    assert (tracker.group_confidence is None) == (n < group)
    # Fixed size: the windows never hold more than their length.
    assert len(tracker._group) <= group and len(tracker._tail_h) <= tail


def test_settings_are_checked():
    with pytest.raises(ValueError, match="group_window"):
        ConfidenceSettings(group_window=0)


def running(stop_below, window=3):
    seq = Slot(0)
    seq.start(Request(key=0, prompt=[1, 2], max_tokens=10, seed=0, stop_below=stop_below), max_new=10, order=0,
              wait_for_prefix=False)
    seq.tracker = Tracker(ConfidenceSettings(group_window=window, tail_window=window))
    return seq


def test_a_sequence_ends_once_its_window_falls_below_the_threshold_and_not_before_the_window_is_full():
    seq = running(2.0)
    stops = StopMatcher(())
    reasons = []
    for c in (1.0, 1.0, 5.0, 1.0, 1.0):
        seq.tracker.add(0.5, c, -0.1)
        reasons.append(seq.accept(5, b"x", eog=False, stops=stops))
    # The first full window (1, 1, 5) = 2.33 passes; (1, 5, 1) passes; (5, 1, 1) passes; no cut yet.
    assert reasons == [None] * 5
    seq.tracker.add(0.5, 1.0, -0.1)  # (1, 1, 1) = 1.0 < 2.0
    assert seq.accept(5, b"x", eog=False, stops=stops) == FINISH_LOW_CONFIDENCE
    done = seq.completion(FINISH_LOW_CONFIDENCE)
    assert done.confidence.tokens == 6 and done.confidence.lowest_group_confidence == pytest.approx(1.0)


def test_without_a_threshold_or_a_tracker_nothing_is_cut():
    seq = running(None)
    for _ in range(9):
        seq.tracker.add(0.5, 0.0, -0.1)
        assert seq.accept(5, b"x", eog=False, stops=StopMatcher(())) is None
    seq.tracker.add(0.5, 0.0, -0.1)
    assert seq.accept(5, b"x", eog=False, stops=StopMatcher(())) == FINISH_LENGTH
    plain = Slot(1)
    plain.start(Request(key=0, prompt=[1], max_tokens=3, seed=0, stop_below=99.0), max_new=3, order=0,
                wait_for_prefix=False)
    assert plain.accept(5, b"x", eog=False, stops=StopMatcher(())) is None
    assert plain.completion(FINISH_LENGTH).confidence is None
