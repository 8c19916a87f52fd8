from __future__ import annotations

import math

import pytest

from seqsearch.search.pareto import best_within, hypervolume, pareto_front


def test_front_drops_dominated_points():
    pts = [(0.9, 1.0), (0.8, 2.0), (0.85, 1.5), (0.8, 1.0), (0.7, 1.9), (0.9, 0.5)]
    assert pareto_front(pts) == [(0.9, 1.0), (0.85, 1.5), (0.8, 2.0)]


def test_hypervolume_hand_computed():
    # staircase above ref (0.5, 0): 0.4*1 + 0.35*0.5 + 0.3*0.5 = 0.725
    pts = [(0.9, 1.0), (0.85, 1.5), (0.8, 2.0)]
    assert hypervolume(pts, (0.5, 0.0)) == pytest.approx(0.725)
    # a single point is a rectangle
    assert hypervolume([(0.7, 3.0)], (0.5, 1.0)) == pytest.approx(0.4)
    # points at or below the reference add nothing
    assert hypervolume([(0.4, 5.0), (0.9, -1.0)], (0.5, 0.0)) == 0.0
    assert hypervolume([], (0.5, 0.0)) == 0.0


def test_hypervolume_ignores_dominated_and_clips():
    base = hypervolume([(0.9, 1.0)], (0.5, 0.0))
    assert hypervolume([(0.9, 1.0), (0.6, 0.2), (0.9, 0.9)], (0.5, 0.0)) == base


def test_best_within_budget():
    pts = [(0.99, math.log(10)), (0.97, math.log(100)), (0.90, math.log(1000))]
    assert best_within(pts, 0.98) == pytest.approx(math.log(10))
    assert best_within(pts, 0.96) == pytest.approx(math.log(100))
    assert best_within(pts, 0.995) is None
