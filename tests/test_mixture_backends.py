"""The torch EM (the mixture fit of GPU runs) against scikit-learn's, on CPU tensors:
the same function a CUDA run calls, so the GPU path is exercised without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelclean.decision import TcPolicy
from labelclean.mixture import fit_loss_mixture


def _losses(kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "two populations":
        wrong = rng.random(6000) < 0.3
        return np.where(wrong, rng.normal(2.5, 0.6, 6000), np.abs(rng.normal(0.1, 0.08, 6000)))
    if kind == "overlapping":
        wrong = rng.random(6000) < 0.2
        return np.where(wrong, rng.normal(1.2, 0.5, 6000), np.abs(rng.normal(0.4, 0.3, 6000)))
    if kind == "clean tail":
        return rng.gamma(0.6, 0.3, 6000)
    if kind == "minus AUM":  # signed scores: the default suspicion
        wrong = rng.random(6000) < 0.4
        return np.where(wrong, rng.normal(1.5, 0.7, 6000), rng.normal(-3.0, 1.0, 6000))
    if kind == "outliers":
        return np.concatenate([np.abs(rng.normal(0.05, 0.03, 5000)), [9.0, 9.0, 9.0]])
    raise ValueError(kind)


KINDS = ["two populations", "overlapping", "clean tail", "minus AUM", "outliers"]


@pytest.mark.parametrize("kind", KINDS)
def test_torch_em_matches_scikit_learn(kind):
    x = _losses(kind)
    ref = fit_loss_mixture(x, seed=3, backend="sklearn")
    got = fit_loss_mixture(torch.from_numpy(x), seed=3, backend="torch")
    assert got.bimodal == ref.bimodal
    # EM stops when the mean log-likelihood gains less than 1e-3 per step; from
    # other starts, a slowly converging (overlapping) mixture stops a little
    # elsewhere (see the next test): 4% of the spread apart at most here
    scale = x.std()
    for name in ("m_c", "m_w", "s_c", "s_w", "threshold"):
        assert getattr(got, name) == pytest.approx(getattr(ref, name), abs=0.04 * scale), name
    assert got.r == pytest.approx(ref.r, abs=0.01)
    assert got.separation == pytest.approx(ref.separation, rel=0.03)
    assert got.bic_1 == pytest.approx(ref.bic_1, rel=1e-9)
    assert got.bic_2 == pytest.approx(ref.bic_2, rel=1e-3)


def test_run_to_convergence_both_backends_find_the_same_mixture(monkeypatch):
    from labelclean import mixture as mixmod

    monkeypatch.setattr(mixmod, "_EM_TOL", 1e-9)
    monkeypatch.setattr(mixmod, "_EM_MAX_ITER", 5000)
    x = _losses("overlapping")
    ref = fit_loss_mixture(x, seed=3, backend="sklearn")
    got = fit_loss_mixture(torch.from_numpy(x), seed=3, backend="torch")
    for name in ("m_c", "m_w", "s_c", "s_w", "r", "threshold", "separation", "bic_2"):
        assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=1e-4), name


def test_both_backends_fit_the_same_subsample(monkeypatch):
    from labelclean import mixture as mixmod

    monkeypatch.setattr(mixmod, "MAX_FIT_POINTS", 700)
    x = _losses("two populations", seed=1)
    ref = fit_loss_mixture(x, seed=5, backend="sklearn")
    got = fit_loss_mixture(torch.from_numpy(x).float(), seed=5, backend="torch")
    # a different subsample would move the one-component BIC, which has a closed form
    assert got.bic_1 == pytest.approx(ref.bic_1, rel=1e-6)
    assert got.m_w == pytest.approx(ref.m_w, abs=0.02)
    other = fit_loss_mixture(x, seed=6, backend="sklearn")
    assert other.bic_1 != pytest.approx(ref.bic_1, rel=1e-6)


def test_auto_fits_cpu_tensors_with_scikit_learn_and_ignores_non_finite_values():
    x = _losses("overlapping")
    with_nan = np.concatenate([x, [np.nan, np.inf]])
    ref = fit_loss_mixture(x, seed=0)
    assert fit_loss_mixture(torch.from_numpy(with_nan), seed=0) == ref
    got = fit_loss_mixture(torch.from_numpy(with_nan), seed=0, backend="torch")
    assert got.m_c == pytest.approx(ref.m_c, abs=0.02)


def test_equal_losses_and_bad_arguments():
    flat = fit_loss_mixture(torch.full((50,), 0.7), backend="torch")
    assert not flat.bimodal and flat.m_c == pytest.approx(0.7)
    with pytest.raises(ValueError, match="at least 4"):
        fit_loss_mixture(torch.ones(3), backend="torch")
    with pytest.raises(ValueError, match="backend must be one of"):
        fit_loss_mixture(np.ones(10), backend="cuda")


def _epochs(n: int = 3000, epochs: int = 12, seed: int = 0):
    """Per-epoch (loss, margin) of a run in which 30% of the labels are wrong and
    the model separates them more each epoch, then starts memorising them."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(n) < 0.3
    for e in range(1, epochs + 1):
        pull = min(e, 6) - max(0, e - 6) * 0.8  # rises, then memorisation erodes it
        margin = np.where(wrong, -pull, pull) + rng.normal(0, 1.0, n)
        loss = np.log1p(np.exp(-margin))
        yield e, loss.astype(np.float32), margin.astype(np.float32)


def test_the_policy_decides_alike_with_either_backend():
    runs = {}
    for backend in ("sklearn", "torch"):
        policy = TcPolicy(mixture_backend=backend, min_steps=0, patience_steps=0)
        flags = []
        for e, loss, margin in _epochs():
            d = policy.observe(e, 100 * e, float(loss.mean()), loss, margin,
                               classes_learned=2, num_classes=2)
            flags.append(d.would_flag)
            if policy.should_stop:
                break
        runs[backend] = (policy.detector.best_epoch, np.array(flags))
    assert runs["torch"][0] == runs["sklearn"][0]
    assert runs["torch"][1].shape == runs["sklearn"][1].shape
    assert runs["torch"][1].any()
    # the flags of every epoch agree but for a handful at the threshold
    assert (runs["torch"][1] != runs["sklearn"][1]).mean() < 0.002
