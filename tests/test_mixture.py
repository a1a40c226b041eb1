"""The two-population loss model of section 5 and the online choice of t_c."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labelclean.decision import PhaseIIDetector, flag_samples
from labelclean.mixture import crossing, fit_loss_mixture
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
    t = crossing(m_c, s_c, m_w, s_w, r)

    def dens(x, m, s, w):
        return w * math.exp(-0.5 * ((x - m) / s) ** 2) / s

    assert m_c < t < m_w
    assert dens(t, m_c, s_c, 1 - r) == pytest.approx(dens(t, m_w, s_w, r), rel=1e-6)
    # with no crossing between the means, the midpoint
    assert crossing(0.0, 1.0, 1.0, 1.0, 1e-9) == pytest.approx(0.5)


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


# ------------------------------------------------ choosing t_c (docs/phases.md)


def test_subsample_is_independent_of_noise_injected_with_the_same_seed(monkeypatch):
    # inject_noise picks the corrupted samples with default_rng(seed).choice(n, k);
    # an unsalted subsample with the same seed would see corrupted samples only.
    from labelclean import mixture as mixmod

    monkeypatch.setattr(mixmod, "MAX_FIT_POINTS", 500)
    n = 4000
    _, mask = inject_noise(np.zeros(n, dtype=int), 10, 0.5, "symmetric", seed=0)
    rng = np.random.default_rng(1)
    losses = np.where(mask, rng.normal(3.0, 0.4, n), np.abs(rng.normal(0.3, 0.2, n)))
    m = fit_loss_mixture(losses, seed=0)
    assert m.bimodal and m.r == pytest.approx(0.5, abs=0.08)


def test_expected_f1_tracks_the_overlap_and_is_zero_without_a_second_population():
    far = fit_loss_mixture(_bimodal()[0])
    rng = np.random.default_rng(0)
    wrong = rng.random(4000) < 0.3
    near = fit_loss_mixture(np.where(wrong, rng.normal(1.6, 0.5, 4000),
                                     np.abs(rng.normal(0.2, 0.3, 4000))))
    assert 0.97 < far.expected_f1 <= 1.0
    assert near.bimodal and near.expected_f1 < far.expected_f1
    flat = far.__class__(**{**far.to_dict(), "bimodal": False})
    assert flat.expected_f1 == 0.0
    d = PhaseIIDetector(score="expected_f1")
    d.update(1, 1.0, near)
    assert d.update(2, 0.9, far) and d.best_epoch == 2


def test_suspicion_scores():
    from labelclean.decision import suspicion_scores

    losses = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    margins = np.array([[1.0, -1.0], [2.0, -3.0], [-6.0, 1.0]])
    assert np.allclose(suspicion_scores(losses, margins, "loss", 2), [4.0, 2.0])
    assert np.allclose(suspicion_scores(losses, margins, "loss", 1), [5.0, 0.0])
    assert np.allclose(suspicion_scores(losses, margins, "logloss", 2),
                       np.log(np.array([4.0, 2.0]) + 1e-6))
    # AUM: the margin averaged over every epoch so far, negated (window unused)
    assert np.allclose(suspicion_scores(losses, margins, "aum", 1), [1.0, 1.0])
    with pytest.raises(ValueError):
        suspicion_scores(losses, margins, "nope")


def test_aum_flags_negative_area_only_when_a_second_population_exists():
    aum_suspicion = np.array([-3.0, -2.0, 0.5, 2.5])  # minus AUM: > 0 means AUM < 0
    m = fit_loss_mixture(_bimodal()[0])
    flags, p = flag_samples(m, aum_suspicion, "aum", noisy=True)
    assert flags.tolist() == [False, False, True, True] and p.shape == (4,)
    flags, _ = flag_samples(m, aum_suspicion, "aum", noisy=False)
    assert not flags.any()
    # the loss rules keep their threshold l_c
    flags, _ = flag_samples(m, np.array([0.1, 5.0]))
    assert flags.tolist() == [False, True]


def test_detector_waits_for_a_second_population_before_counting_patience():
    m = fit_loss_mixture(_bimodal()[0])
    flat = m.__class__(**{**m.to_dict(), "bimodal": False, "delta_L": 9.0})
    d = PhaseIIDetector(patience=2, score="delta_L", wait_for_noise=True)
    for epoch in range(1, 6):  # five epochs without noise: never stops, latest is t_c
        assert d.update(epoch, 1.0 / epoch, flat)
        assert not d.should_stop and d.best_epoch == epoch
    for epoch, delta in zip(range(6, 10), [1.0, 2.0, 1.5, 1.2], strict=True):
        d.update(epoch, 0.1, _mix(delta))
    assert d.first_noisy_epoch == 6 and d.best_epoch == 7 and d.should_stop


def test_cleaner_with_aum_suspicion_flags_the_mislabelled():
    from conftest import synthetic_images

    from labelclean import Cleaner, Dataset

    x, _, given, mask = synthetic_images(400, num_classes=3, noise_rate=0.3, seed=2)
    res = Cleaner("mlp:32", max_epochs=12, patience=3, probe_every=0, device="cpu",
                  suspicion="aum", min_steps=100).fit(Dataset.from_arrays(x, given),
                                                      noise_mask=mask)
    flags = np.zeros(len(mask), bool)
    flags[res.scores["index"].to_numpy()] = res.scores["flagged"].to_numpy()
    tp = (flags & mask).sum()
    assert tp / max(1, flags.sum()) > 0.8 and tp / mask.sum() > 0.8
    assert res.flagged["reason"].str.contains("mean margin").all()
    assert (res.flagged["score"] > 0).all()


def test_aum_population_gate_needs_separation_and_a_sizeable_negative_share():
    from labelclean.decision import aum_population

    m = fit_loss_mixture(_bimodal()[0])
    base = {**m.to_dict(), "bimodal": False}
    moderate = m.__class__(**{**base, "separation": 1.7})
    weak = m.__class__(**{**base, "separation": 1.2})
    many_negative = np.r_[np.full(30, 2.0), np.full(70, -2.0)]  # 30 % with AUM < 0
    few_negative = np.r_[np.full(5, 2.0), np.full(95, -2.0)]  # 5 %
    assert aum_population(moderate, many_negative)
    assert not aum_population(moderate, few_negative)  # clean data: a thin AUM < 0 tail
    assert not aum_population(weak, many_negative)  # no separation: not a population


def test_detector_min_epoch_keeps_early_epochs_provisional():
    d = PhaseIIDetector(patience=2, score="delta_L", wait_for_noise=True, min_epoch=3)
    for epoch, delta in zip(range(1, 7), [9.0, 5.0, 2.0, 3.0, 2.5, 2.0], strict=True):
        d.update(epoch, 0.1, _mix(delta))
    # epochs 1-2 were noisy and scored higher, but the search starts at epoch 3
    assert d.first_noisy_epoch == 3 and d.best_epoch == 4 and d.should_stop
