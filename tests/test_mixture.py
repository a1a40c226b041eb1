"""The two-population loss model of section 5 and the online choice of t_c."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labelclean.decision import PhaseIIDetector, flag_samples
from labelclean.mixture import _crossing, fit_loss_mixture
from labelclean.noise import inject_noise


def _bimodal(n=4000, rho=0.3, seed=0):
    rng = np.random.default_rng(seed)
    wrong = rng.random(n) < rho
    losses = np.where(wrong, rng.normal(3.0, 0.5, n), np.abs(rng.normal(0.2, 0.15, n)))
    return losses, wrong


def test_recovers_two_populations():
    losses, wrong = _bimodal()
    m = fit_loss_mixture(losses)
    assert m.bimodal
    assert m.m_c == pytest.approx(0.23, abs=0.05) and m.m_w == pytest.approx(3.0, abs=0.1)
    assert m.r == pytest.approx(wrong.mean(), abs=0.02)
    assert m.delta_L == pytest.approx(m.m_w - m.m_c)
    assert m.m_c < m.threshold < m.m_w
    flags, p = flag_samples(m, losses)
    assert (flags == wrong).mean() > 0.99
    assert p[wrong].mean() > 0.95 and p[~wrong].mean() < 0.05


def test_threshold_is_where_weighted_densities_cross():
    m_c, s_c, m_w, s_w, r = 0.3, 0.2, 2.5, 0.8, 0.4
    t = _crossing(m_c, s_c, m_w, s_w, r)

    def dens(x, m, s, w):
        return w * math.exp(-0.5 * ((x - m) / s) ** 2) / s

    assert m_c < t < m_w
    assert dens(t, m_c, s_c, 1 - r) == pytest.approx(dens(t, m_w, s_w, r), rel=1e-6)
    # with no crossing between the means, the midpoint
    assert _crossing(0.0, 1.0, 1.0, 1.0, 1e-9) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_clean_loss_tail_is_not_a_second_population(seed):
    # Clean data after training: most losses near zero, a long tail of hard cases.
    rng = np.random.default_rng(seed)
    losses = rng.exponential(0.05, 5000) + rng.exponential(0.4, 5000) * (rng.random(5000) < 0.1)
    m = fit_loss_mixture(losses)
    assert not m.bimodal
    flags, _ = flag_samples(m, losses)
    assert flags.sum() == 0


def test_posterior_is_monotone_above_the_upper_mean():
    losses, _ = _bimodal()
    m = fit_loss_mixture(losses)
    grid = np.linspace(m.m_w, m.m_w + 10, 50)
    assert np.all(np.diff(m.posterior(grid)) >= -1e-6)


def _mix(delta):
    losses, _ = _bimodal()
    m = fit_loss_mixture(losses)
    return m.__class__(**{**m.to_dict(), "delta_L": delta})


def test_detector_prefers_first_clear_peak_and_stops_after_patience():
    d = PhaseIIDetector(patience=3, score="delta_L")
    deltas = [0.5, 1.5, 2.0, 1.8, 1.7, 1.9, 3.0]  # a later, larger peak after patience
    for epoch, delta in enumerate(deltas, 1):
        d.update(epoch, train_loss=1.0 / epoch, mixture=_mix(delta))
        if d.should_stop:
            break
    assert d.best_epoch == 3 and epoch == 6


def test_detector_ignores_a_loss_spike():
    d = PhaseIIDetector(patience=5, score="delta_L")
    losses = [2.0, 1.0, 0.35, 2.99, 0.3]
    deltas = [0.5, 1.0, 1.5, 4.0, 1.4]
    for epoch, (tl, delta) in enumerate(zip(losses, deltas), 1):
        d.update(epoch, train_loss=tl, mixture=_mix(delta))
    assert d.best_epoch == 3 and d.unstable_epochs == [4]
    # an epoch whose eval loss dwarfs its training loss is unstable too
    d2 = PhaseIIDetector(patience=5, score="delta_L")
    d2.update(1, 2.0, _mix(9.0), eval_loss=50.0)
    d2.update(2, 1.5, _mix(1.0), eval_loss=1.4)
    assert d2.best_epoch == 2


@pytest.mark.parametrize("kind", ["symmetric", "pairflip", "classdep"])
def test_inject_noise_changes_exactly_the_masked_labels(kind):
    y = np.repeat(np.arange(5), 100)
    noisy, mask = inject_noise(y, 5, 0.3, kind, seed=3)
    assert (noisy != y).sum() == mask.sum() == 150
    assert np.array_equal(noisy != y, mask)
    if kind == "pairflip":
        assert np.all(noisy[mask] == (y[mask] + 1) % 5)


def test_a_few_outliers_are_not_a_population():
    # a needle-thin component of 3 far outliers has a huge D but no weight
    rng = np.random.default_rng(0)
    losses = np.concatenate([np.abs(rng.normal(0.05, 0.03, 5000)), [9.0, 9.0, 9.0]])
    m = fit_loss_mixture(losses)
    assert m.separation > 2.0 and min(m.r, 1 - m.r) < 0.005
    assert not m.bimodal
