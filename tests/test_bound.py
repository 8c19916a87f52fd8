"""The export rule's promise, checked on synthetic studies: chains with known true drops,
measured with the noise the committed studies show (seed 0.18, validation images 0.29 on
1,800, test images 0.39 on 1,000 points per run; the one baseline every drop is measured
against has the same image noise, shared by every chain of the study), and the rule of
`search.bound` picking the most compressed chain that passes. Pure numpy: no training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seqsearch.search.bound import EdgePrior, ExportRule, pooled_sd, z_of

SEED_SD, VAL_SD, N_VAL, N_TEST = 0.18, 0.29, 1800, 1000
TEST_SD = VAL_SD * math.sqrt(N_VAL / N_TEST)
BASE_SD = VAL_SD  # the baseline run's image noise on the validation split
BUDGET = 1.0


def _study(rng: np.random.Generator, *, points: int, trials: int, confidence: float,
           chain_sd: float = 0.0, base_sd: float = BASE_SD, baseline_runs: float = 1.0
           ) -> tuple[float | None, float | None]:
    """One synthetic study: `points` probe points on two seeds and `trials` tuning trials
    (picked on one run, judged on two fresh ones), true drops uniform on [−0.5, 3] points, log
    BitOpsCR rising with the drop (2 per point, sd 0.3: many chains at the budget's edge).
    `chain_sd`: an image effect a chain keeps on every seed (not seen by seed repeats);
    `base_sd`: the baseline's image noise on validation, added to every drop of the study (and
    its test-split share to every test drop); `baseline_runs`: what the rule counts for it
    (inf: the margin without the baseline's term).
    Returns the exported chain's mean test drop over its judging runs under the bound and
    under the old rule (mean validation drop within the budget), None where nothing passed."""
    k = points + trials
    mu = rng.uniform(-0.5, 3.0, k)
    log_cr = 2.0 * mu + rng.normal(0.0, 0.3, k)
    shared_val = rng.normal(0.0, chain_sd, k)[:, None] + rng.normal(0.0, base_sd)
    shared_test = (rng.normal(0.0, chain_sd * math.sqrt(N_VAL / N_TEST), k)[:, None]
                   + rng.normal(0.0, base_sd * math.sqrt(N_VAL / N_TEST)))
    seed = rng.normal(0.0, SEED_SD, (k, 3))
    val = mu[:, None] + seed + rng.normal(0.0, VAL_SD, (k, 3)) + shared_val
    test = mu[:, None] + seed + rng.normal(0.0, TEST_SD, (k, 3)) + shared_test
    # probe points: seeds 0 and 1 judge them; trials: picked on run 0, judged on runs 1, 2
    is_trial = np.arange(k) >= points
    selected = ~is_trial | (val[:, 0] <= BUDGET)  # a trial is a candidate when feasible
    judged_val = np.where(is_trial, val[:, 1:].mean(1), val[:, :2].mean(1))
    judged_test = np.where(is_trial, test[:, 1:].mean(1), test[:, :2].mean(1))
    sd, _ = pooled_sd(val[:points, :2].tolist())
    assert sd is not None
    pick_drop = np.where(is_trial, val[:, 0], judged_val)
    prior = EdgePrior.fit(log_cr, pick_drop, np.where(is_trial, sd ** 2, sd ** 2 / 2))
    rule = ExportRule(BUDGET, confidence, sd, "synthetic", N_VAL, N_TEST, prior,
                      baseline_runs=baseline_runs)
    order = np.argsort(-log_cr)
    new = next((judged_test[i] for i in order
                if selected[i] and rule.passes(float(judged_val[i]), 2, float(log_cr[i]))), None)
    old = next((judged_test[i] for i in order
                if selected[i] and judged_val[i] <= BUDGET), None)
    return new, old


def _coverage(results: list[float | None]) -> tuple[float, int]:
    got = [r for r in results if r is not None]
    return sum(r <= BUDGET for r in got) / len(got), len(got)


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_the_exported_chains_test_mean_is_within_the_budget_at_the_stated_confidence(
        confidence):
    """1,000 synthetic studies of 200 probe points and 20 trials each: the chain the bound
    exports has its mean test drop within the budget in at least `confidence` of them (0.951
    at 0.9, 0.974 at 0.95), where the old rule (mean validation drop within the budget) holds
    in well under half (0.41)."""
    rng = np.random.default_rng(31)
    runs = [_study(rng, points=200, trials=20, confidence=confidence) for _ in range(1000)]
    new, n_new = _coverage([r[0] for r in runs])
    old, _ = _coverage([r[1] for r in runs])
    assert n_new >= 750  # it exports (a chain passes) in most studies (953 at 0.9, 806 at 0.95)
    assert new >= confidence, new
    assert old < 0.5, old


def test_few_candidates_hold_the_promise_too():
    """A study with few candidates at the edge (40 points, 5 trials): the bound alone carries it."""
    rng = np.random.default_rng(7)
    new, n = _coverage([_study(rng, points=40, trials=5, confidence=0.9)[0]
                        for _ in range(1000)])
    assert n >= 900 and new >= 0.9, (new, n)


def test_the_baseline_runs_image_noise_is_what_the_margin_of_the_candidate_alone_misses():
    """Every drop is measured against one baseline run, whose image noise every chain of the
    study shares and no candidate seed averages away. Without its term (the issue's formula,
    σ_run · sqrt((1 + r) / n)) the promise breaks on the same studies (0.856 at 0.9); with it,
    and on studies whose baseline had no such noise, it holds."""
    rng = np.random.default_rng(31)
    without, n = _coverage([_study(rng, points=200, trials=20, confidence=0.9,
                                   baseline_runs=math.inf)[0] for _ in range(1000)])
    assert n >= 990 and without < 0.9, without
    rng = np.random.default_rng(8)
    quiet, _ = _coverage([_study(rng, points=200, trials=20, confidence=0.9, base_sd=0.0)[0]
                          for _ in range(300)])
    assert quiet >= 0.95, quiet  # the term is wide where the baseline happens to be exact


def test_a_chain_level_image_effect_is_what_the_bound_does_not_see():
    """The bound's stated assumption: image noise independent between runs. An image effect a
    chain keeps on every seed (sd 0.15 point on validation) is invisible to seed repeats and
    costs coverage; this pins down by how much, so docs/commands.md can say it."""
    rng = np.random.default_rng(5)
    new, _ = _coverage([_study(rng, points=200, trials=20, confidence=0.9, chain_sd=0.15)[0]
                        for _ in range(500)])
    assert 0.8 <= new < 0.95, new


def test_the_margin_is_the_issues_formula_plus_the_baseline_run():
    rule = ExportRule(1.0, 0.9, 0.34, "x", 1800, 1000)
    assert rule.z == pytest.approx(1.2816, abs=1e-4)
    assert rule.noise_margin(2) == pytest.approx(1.2816 * 0.34 * math.sqrt(2.8 * (1 / 2 + 1)),
                                                 rel=1e-4)
    issue = ExportRule(1.0, 0.9, 0.34, "x", 1800, 1000, baseline_runs=math.inf)
    assert issue.noise_margin(2) == pytest.approx(1.2816 * 0.34 * math.sqrt(2.8 / 2), rel=1e-4)
    assert issue.describe(0.4, 2, 3.0)["baseline_runs"] is None
    assert rule.noise_margin(0) == math.inf
    assert rule.bound(0.4, 2, 3.0) == pytest.approx(0.4 + rule.noise_margin(2))  # no prior
    d = rule.describe(0.4, 2, 3.0)
    assert d["margin"] == pytest.approx(1.0 - d["bound"]) and d["sigma_run"] == 0.34
    assert z_of(0.95) == pytest.approx(1.6449, abs=1e-4)


def test_the_prior_only_ever_raises_a_drop():
    """A drop far better than its neighbours' is shrunk toward them; a worse one keeps its
    own figure."""
    x = np.linspace(0.0, 1.0, 50)
    prior = EdgePrior.fit(x, np.full(50, 1.2), np.full(50, 0.01))
    assert prior.adjusted(0.5, 0.5, 0.06) > 0.5
    assert prior.adjusted(2.0, 0.5, 0.06) == 2.0


def test_pooled_sd_counts_each_model_once():
    """Two τ rows of one model weigh as one point."""
    sd, dof = pooled_sd([[0.0, 2.0], [0.0, 2.0], [1.0, 1.0]], [0.5, 0.5, 1.0])
    assert dof == pytest.approx(2.0) and sd == pytest.approx(1.0)


def _tuned_study(rng: np.random.Generator, *, confirm: int, student_t: bool) -> float | None:
    """A study without a probe (`tune.chains`): 24 trials picked on one run, the `confirm`
    most compressing feasible ones judged on two fresh runs, σ_run pooled from those runs
    alone (`confirm` dof), as `search.confirm` does. The exported chain's mean test drop, or
    None where no candidate passed."""
    k = 24
    mu = rng.uniform(-0.5, 3.0, k)
    log_cr = 2.0 * mu + rng.normal(0.0, 0.3, k)
    seed = rng.normal(0.0, SEED_SD, (k, 3))
    val = mu[:, None] + seed + rng.normal(0.0, VAL_SD, (k, 3)) + rng.normal(0.0, BASE_SD)
    test = (mu[:, None] + seed + rng.normal(0.0, TEST_SD, (k, 3))
            + rng.normal(0.0, BASE_SD * math.sqrt(N_VAL / N_TEST)))
    feasible = np.flatnonzero(val[:, 0] <= BUDGET)
    chosen = feasible[np.argsort(-log_cr[feasible])][:confirm]
    sd, dof = pooled_sd(val[chosen, 1:].tolist())
    if sd is None:
        return None
    rule = ExportRule(BUDGET, 0.9, sd, "synthetic", N_VAL, N_TEST,
                      EdgePrior.fit(log_cr, val[:, 0], np.full(k, sd ** 2)),
                      sigma_dof=dof if student_t else math.inf)
    return next((float(test[i, 1:].mean()) for i in chosen
                 if rule.passes(float(val[i, 1:].mean()), 2, float(log_cr[i]))), None)


def test_a_sigma_from_few_dof_is_priced_by_students_t():
    """σ_run pooled from 4 confirmed candidates has 4 dof and is often well below the truth;
    a study exports mostly when it is. With the normal quantile the promise at 0.9 holds in
    0.86 of 6,000 such studies, with Student's t at σ_run's dof in 0.88: better, still short,
    which is why a study without a probe confirms 8 (next test)."""
    got = {}
    for student_t in (False, True):
        rng = np.random.default_rng(3)
        got[student_t] = _coverage([_tuned_study(rng, confirm=4, student_t=student_t)
                                    for _ in range(6000)])[0]
    assert got[False] < 0.88 and got[True] > got[False] + 0.01, got
    assert ExportRule(1.0, 0.9, 0.2, "x", 1800, 1000, sigma_dof=4).z == \
        pytest.approx(1.5332, abs=1e-4)


def test_eight_confirmed_candidates_hold_the_promise_without_a_probe():
    rng = np.random.default_rng(3)
    new, n = _coverage([_tuned_study(rng, confirm=8, student_t=True) for _ in range(3000)])
    assert n >= 1500 and new >= 0.92, (new, n)
