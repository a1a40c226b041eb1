"""The order-parameter estimators against exact values on tiny float64 models.

Exact values come from per-sample gradients (``torch.func.vmap(grad(...))``):
the full gradient ``g``, the per-group gradients ``g_c``, ``g_w`` and the
per-sample covariance ``S``. For minibatches of ``B`` distinct samples (what the
probe draws) the minibatch-gradient covariance is ``C = S / B * (N - B) / (N - 1)``
(eq 5), so ``A = |g|^2 + Tr C`` (eq 8), ``D = Tr C`` (eq 9),
``D_par = g^T C g / |g|^2`` and ``sigma_lambda2 = D_par / |g|^2`` (eq 9).
``R`` (eq 6) has no closed form: it is compared with a large independent
Monte-Carlo of minibatch gradients averaged directly from the per-sample ones.

Tolerances are about 4 standard deviations of the estimator at the stated K
(measured over seeds when the tests were written).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import hypergeom
from threadpoolctl import threadpool_limits
from torch import nn
from torch.func import functional_call, grad, vmap

from labelclean.order_parameters import (
    BASE_KEYS,
    DEFAULT_NUM_BATCHES,
    SPECTRUM_KEYS,
    SPLIT_KEYS,
    collect_gradient_gram,
    effective_dimension,
    gradient_spectrum,
    leave_one_out_lambdas,
    order_parameters_from_gram,
    probe_order_parameters,
    spectrum_from_gram,
)

torch.set_num_threads(1)
threadpool_limits(1)  # numpy's BLAS: the machine has 2 cores, shared

N, DIM, CLASSES, B = 240, 5, 3, 48
BIG_K = 2000


# --------------------------------------------------------------------------- fixtures


def make_data():
    """Teacher-labelled Gaussian features; 30 % of the labels replaced by a wrong class."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, DIM, dtype=torch.float64, generator=gen)
    teacher = 2 * torch.randn(DIM, CLASSES, dtype=torch.float64, generator=gen)
    y = (x @ teacher + 0.5 * torch.randn(N, CLASSES, dtype=torch.float64, generator=gen)).argmax(1)
    rng = np.random.default_rng(0)
    split = rng.random(N) < 0.3
    noisy = y.clone()
    shift = torch.from_numpy(rng.integers(1, CLASSES, int(split.sum())))
    noisy[torch.from_numpy(split)] = (y[torch.from_numpy(split)] + shift) % CLASSES
    return x, noisy, split


@pytest.fixture(scope="module")
def data():
    return make_data()


def make_model(kind: str) -> nn.Module:
    torch.manual_seed(1)
    if kind == "logistic":
        model = nn.Linear(DIM, CLASSES)
    else:
        model = nn.Sequential(nn.Linear(DIM, 8), nn.Tanh(), nn.Linear(8, CLASSES))
    return model.double().train()


def per_sample_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """``(N, N_p)`` per-sample loss gradients, flattened in ``model.parameters()`` order."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([g[k].reshape(len(x), -1) for k in params], 1).numpy()


def exact_moments(P: np.ndarray, b: int) -> dict[str, float | np.ndarray]:
    """Exact ensemble values for minibatches of ``b`` distinct samples (eqs 5, 8, 9)."""
    n = len(P)
    g = P.mean(0)
    S = (P - g).T @ (P - g) / n
    C = S / b * (n - b) / (n - 1)
    a0 = float(g @ g)
    d = float(np.trace(C))
    d_par = float(g @ C @ g) / a0
    return {
        "A": a0 + d,
        "A_0": a0,
        "D": d,
        "D_par": d_par,
        "A_perp": d - d_par,
        "sigma_lambda2": d_par / a0,
        "A_with_replacement": a0 + float(np.trace(S)) / b,
        "T": float(g @ C @ g) + a0**2,  # <(g^mu . g)^2>
        "C": C,
        "g": g,
    }


def exact_split(P: np.ndarray, split: np.ndarray, b: int) -> dict[str, float]:
    """Exact eqs 11-15 for the split: ``g_c``, ``g_w``, the group activities and alignments."""
    n = len(P)
    g = P.mean(0)
    gc, gw = P[~split].mean(0), P[split].mean(0)
    rho = float(split.mean())

    def group_activity(Q: np.ndarray, in_group: int) -> float:
        # E[|g_group^mu|^2 | n_group > 0], n_group hypergeometric (B distinct samples).
        m = len(Q)
        q = Q.mean(0)
        tr = float(np.trace((Q - q).T @ (Q - q) / m))
        ks = np.arange(1, b + 1)
        pmf = hypergeom(n, in_group, b).pmf(ks)
        cond = q @ q + tr / ks * (m - ks) / max(m - 1, 1)
        return float((pmf * cond).sum() / pmf.sum())

    def cos(u, v):
        return float(u @ v / math.sqrt((u @ u) * (v @ v)))

    return {
        "A_c": group_activity(P[~split], int((~split).sum())),
        "A_w": group_activity(P[split], int(split.sum())),
        "A_0c": (1 - rho) ** 2 * float(gc @ gc),
        "A_0w": rho**2 * float(gw @ gw),
        "R_cw": cos(gc, gw),
        "R_ac": cos(g, gc),
        "R_aw": cos(g, gw),
        "rho": rho,
    }


def minibatch_grads(P: np.ndarray, b: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` independent minibatch gradients of ``b`` distinct samples, averaged directly."""
    out = np.empty((k, P.shape[1]))
    for s in range(0, k, 2000):
        m = min(2000, k - s)
        idx = rng.random((m, len(P))).argpartition(b - 1, axis=1)[:, :b]
        out[s : s + m] = P[idx].mean(1)
    return out


def monte_carlo_R(P: np.ndarray, b: int, pairs: int = 40_000) -> float:
    """``R`` (eq 6) by brute force: mean cosine between independent minibatch gradients."""
    rng = np.random.default_rng(123)
    u, v = minibatch_grads(P, b, pairs, rng), minibatch_grads(P, b, pairs, rng)
    return float(np.mean((u * v).sum(1) / np.sqrt((u * u).sum(1) * (v * v).sum(1))))


@pytest.fixture(scope="module", params=["logistic", "mlp"])
def setup(request, data):
    """Model, exact values and one big split probe (K = 2000) per model kind."""
    x, y, split = data
    model = make_model(request.param)
    P = per_sample_grads(model, x, y)
    exact = exact_moments(P, B)
    exact.update(exact_split(P, split, B))
    exact["R"] = monte_carlo_R(P, B)
    gram = collect_gradient_gram(
        model,
        x,
        y,
        batch_size=B,
        num_batches=BIG_K,
        split=split,
        generator=torch.Generator().manual_seed(0),
    )
    return {"model": model, "P": P, "exact": exact, "gram": gram, "kind": request.param}


# --------------------------------------------------------------------------- convergence


def test_base_estimators_match_exact_values(setup):
    """Eqs 5-9: A, A_0, D, R, sigma_lambda^2, D_par, A_perp at K = 2000 match the exact values."""
    est = setup["gram"].order_parameters()
    ex = setup["exact"]
    rel = {"A": 0.02, "D": 0.04, "A_0": 0.04, "D_par": 0.25, "A_perp": 0.06, "sigma_lambda2": 0.25}
    for key, tol in rel.items():
        assert est[key] == pytest.approx(ex[key], rel=tol), key
    assert est["R"] == pytest.approx(ex["R"], abs=0.02)


def test_minibatches_are_drawn_without_replacement(setup):
    """Eq 8 with sampling without replacement: A = |g|^2 + Tr(S)/B (N-B)/(N-1), not Tr(S)/B."""
    est = setup["gram"].order_parameters()["A"]
    ex = setup["exact"]
    gap = ex["A_with_replacement"] - ex["A"]
    assert gap > 0.05 * ex["A"]
    assert abs(est - ex["A"]) < 0.25 * gap


def test_split_estimators_match_exact_values(setup):
    """Eqs 11-15: A_c, A_w, A_0c, A_0w, R_cw, R_ac, R_aw at K = 2000 match the exact values."""
    est = setup["gram"].order_parameters()
    ex = setup["exact"]
    assert est["rho"] == ex["rho"]
    for key in ("A_c", "A_w", "A_0c"):
        assert est[key] == pytest.approx(ex[key], rel=0.05), key
    # |g_w| is small (A_0w ~ A_0c / 20) but its estimate is still within 15 %.
    assert est["A_0w"] == pytest.approx(ex["A_0w"], rel=0.15)
    for key, tol in (("R_cw", 0.04), ("R_ac", 0.02), ("R_aw", 0.05)):
        assert est[key] == pytest.approx(ex[key], abs=tol), key


def test_eq14_directed_activity_consistency(setup):
    """Eq 14 and the A_0 identity below eq 15: A_0 = A_0c + A_0w + 2 sqrt(A_0c A_0w) R_cw."""
    est = setup["gram"].order_parameters()
    rhs = est["A_0c"] + est["A_0w"] + 2 * math.sqrt(est["A_0c"] * est["A_0w"]) * est["R_cw"]
    assert rhs == pytest.approx(est["A_0"], rel=0.05)
    assert rhs == pytest.approx(setup["exact"]["A_0"], rel=0.05)


def test_errors_shrink_with_K(setup):
    """Eqs 6, 8, 9: the Monte-Carlo error of A, A_0, D falls like 1/sqrt(K) (16x K: ~4x)."""
    P, ex = setup["P"], setup["exact"]
    rng = np.random.default_rng(7)

    def mean_abs_error(k: int, reps: int = 24) -> dict[str, float]:
        errs = {key: [] for key in ("A", "A_0", "D")}
        for _ in range(reps):
            V = minibatch_grads(P, B, k, rng)
            est = order_parameters_from_gram(V @ V.T)
            for key in errs:
                errs[key].append(abs(est[key] - ex[key]))
        return {key: float(np.mean(v)) for key, v in errs.items()}

    small, large = mean_abs_error(20), mean_abs_error(320)
    for key in small:
        assert large[key] < small[key] / 2.5, key


def test_A0_and_triple_estimators_are_unbiased(setup):
    """Eqs 7-9: A_0 and <(g^mu.g)^2> are unbiased at K = 4; |mean g^mu|^2 is biased by D/K."""
    P, ex = setup["P"], setup["exact"]
    rng = np.random.default_rng(11)
    k, reps = 4, 4000
    V = minibatch_grads(P, B, k * reps, rng).reshape(reps, k, -1)
    grams = np.einsum("rip,rjp->rij", V, V)
    a0, t, naive = [], [], []
    for G in grams:
        est = order_parameters_from_gram(G)
        a0.append(est["A_0"])
        t.append(est["A_0"] * (est["A"] - est["A_perp"]))  # T = A_0 (A - A_perp)
        naive.append(G.sum() / k**2)
    a0, t, naive = map(np.asarray, (a0, t, naive))
    se = a0.std() / math.sqrt(reps)
    assert abs(a0.mean() - ex["A_0"]) < 4 * se
    assert abs(t.mean() - ex["T"]) < 4 * t.std() / math.sqrt(reps)
    assert abs(naive.mean() - ex["A_0"] - ex["D"] / k) < 4 * naive.std() / math.sqrt(reps)
    assert ex["D"] / k > 8 * se  # the naive bias is resolved by this many repetitions


# --------------------------------------------------------------------------- exact identities


def test_activity_decomposition_is_exact(setup, data):
    """Eqs 8-9: A = A_0 + A_perp + D_par holds for the estimates to floating precision."""
    x, y, _ = data
    est = probe_order_parameters(
        setup["model"],
        x,
        y,
        batch_size=B,
        num_batches=5,
        generator=torch.Generator().manual_seed(3),
    )
    assert est["A_0"] + est["A_perp"] + est["D_par"] == pytest.approx(est["A"], rel=1e-12)
    big = setup["gram"].order_parameters()
    assert big["A_0"] + big["A_perp"] + big["D_par"] == pytest.approx(big["A"], rel=1e-12)
    assert est["D"] == pytest.approx(est["A"] - est["A_0"], rel=1e-12)


def test_leave_one_out_lambda_mean_is_one():
    """Eqs 7, 9: <lambda_mu> = 1 exactly for the leave-one-out lambdas, for any Gram matrix."""
    rng = np.random.default_rng(0)
    for k in (3, 7, 50):
        V = rng.normal(size=(k, 20)) + rng.normal(size=20)
        lam = leave_one_out_lambdas(V @ V.T)
        assert lam.mean() == pytest.approx(1.0, abs=1e-12)
        est = order_parameters_from_gram(V @ V.T)
        # sigma_lambda^2 is the variance of lambda's unbiased counterpart, not of these.
        assert math.isfinite(est["sigma_lambda2"])


def test_split_probe_reproduces_plain_probe():
    """Eq 14 per minibatch: g^mu = (n_c g_c^mu + n_w g_w^mu) / B; split and plain G agree."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(100, DIM, dtype=torch.float64, generator=gen)
    y = torch.randint(0, CLASSES, (100,), generator=gen)
    split = np.random.default_rng(5).random(100) < 0.4
    model = make_model("mlp")
    plain = collect_gradient_gram(
        model, x, y, batch_size=16, num_batches=12, generator=torch.Generator().manual_seed(9)
    )
    with_split = collect_gradient_gram(
        model,
        x,
        y,
        batch_size=16,
        num_batches=12,
        split=split,
        generator=torch.Generator().manual_seed(9),
    )
    np.testing.assert_allclose(with_split.G, plain.G, rtol=1e-10, atol=1e-14)
    a, b = plain.order_parameters(), with_split.order_parameters()
    for key in BASE_KEYS:
        assert b[key] == pytest.approx(a[key], rel=1e-8), key


# --------------------------------------------------------------------------- spectrum


def test_spectrum_resolution_bound_and_trace():
    """Fig 2 / eq 5: D_s <= K - 1 = spectrum_resolution, and the eigenvalues sum to D = Tr C."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(200, 40, dtype=torch.float64, generator=gen)
    y = torch.randint(0, 10, (200,), generator=gen)
    model = nn.Linear(40, 10).double()  # 410 parameters, far more than K - 1
    for k in (4, 10):
        est = probe_order_parameters(
            model,
            x,
            y,
            batch_size=8,
            num_batches=k,
            spectrum=True,
            generator=torch.Generator().manual_seed(k),
        )
        assert set(SPECTRUM_KEYS) <= set(est)
        assert est["spectrum_resolution"] == k - 1
        assert 1 <= est["D_s"] <= k - 1
        ev = gradient_spectrum(
            model, x, y, batch_size=8, num_batches=k, generator=torch.Generator().manual_seed(k)
        )
        assert len(ev) == k - 1 and np.all(np.diff(ev) <= 0)
        assert ev.sum() == pytest.approx(est["D"], rel=1e-10)


def test_spectrum_matches_exact_covariance(setup):
    """Fig 2 / eq 5: at K = 1000 the leading eigenvalues of C and D_s match the exact ones.

    The first 1000 minibatches of the K = 2000 probe (a block of its Gram matrix)
    keep the eigen-decomposition cheap. Each of the leading eigenvalues, some
    nearly degenerate, is within 20 % (sd ~ sqrt(2/K) = 4.5 % plus the
    splitting of near-degenerate pairs); their sum within 8 %.
    """
    G = setup["gram"].G[:1000, :1000]
    ev = spectrum_from_gram(G)
    exact_ev = np.linalg.eigvalsh(setup["exact"]["C"])[::-1]
    np.testing.assert_allclose(ev[:3], exact_ev[:3], rtol=0.2)
    assert ev[:5].sum() == pytest.approx(exact_ev[:5].sum(), rel=0.08)
    assert effective_dimension(ev) == effective_dimension(exact_ev)


def test_effective_dimension_definition():
    """Section 3: D_s is the fewest leading eigenvalues holding 90 % of the variance."""
    assert effective_dimension(np.array([5.0, 3.0, 1.0, 0.5, 0.5])) == 3
    assert effective_dimension(np.array([1.0] * 10)) == 9
    assert math.isnan(effective_dimension(np.zeros(4)))


# ------------------------------------------------------------------ the model is left alone


def test_probe_leaves_model_unchanged():
    """Eq 2 is never applied: parameters, BN buffers, .grad, mode and global RNG are unchanged."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 4)
    ).train()
    x = torch.randn(64, 6)
    y = torch.randint(0, 4, (64,))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    rng_state = torch.get_rng_state()
    est = probe_order_parameters(
        model,
        x,
        y,
        batch_size=16,
        num_batches=5,
        split=np.arange(64) % 3 == 0,
        spectrum=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert all(math.isfinite(est[k]) for k in ("A", "A_0c", "R_cw"))
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    for g, p in zip(grads, model.parameters(), strict=True):
        assert torch.equal(g, p.grad)
    assert torch.equal(rng_state, torch.get_rng_state())
    assert model.training


def test_probe_uses_train_mode_batch_statistics():
    """Eq 3 as SGD sees it: with batch norm, a train-mode probe differs from an eval-mode one."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    x, y = torch.randn(64, 6) * 3 + 1, torch.randint(0, 4, (64,))
    kw = dict(batch_size=16, num_batches=5)
    train = probe_order_parameters(
        model.train(), x, y, generator=torch.Generator().manual_seed(0), **kw
    )
    evald = probe_order_parameters(
        model.eval(), x, y, generator=torch.Generator().manual_seed(0), **kw
    )
    assert not model.training
    assert train["A"] != pytest.approx(evald["A"], rel=1e-3)


# --------------------------------------------------------------------------- memory: sketch


def test_sketch_matches_exact_products(monkeypatch):
    """Eqs 6-9, memory path: a CountSketch of dimension d agrees with the exact path."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(300, 30, dtype=torch.float64, generator=gen)
    y = torch.randint(0, 5, (300,), generator=gen)
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(30, 256), nn.Tanh(), nn.Linear(256, 5)).double()  # 9221
    split = np.arange(300) % 4 == 0
    kw = dict(batch_size=32, num_batches=24, split=split)
    exact = collect_gradient_gram(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
    sketch = collect_gradient_gram(
        model, x, y, generator=torch.Generator().manual_seed(1), max_dim=2048, **kw
    )
    assert exact.sketch_dim is None and sketch.sketch_dim == 2048
    a, b = exact.order_parameters(), sketch.order_parameters()
    for key in ("A", "A_0", "D", "A_c", "A_0c"):
        assert b[key] == pytest.approx(a[key], rel=0.08), key
    for key in ("R", "R_cw", "R_ac"):
        assert b[key] == pytest.approx(a[key], abs=0.05), key
    # No sketch when the model is no bigger than max_dim.
    small = collect_gradient_gram(
        model, x, y, generator=torch.Generator().manual_seed(1), max_dim=10_000, **kw
    )
    assert small.sketch_dim is None
    # max_dim=None sketches only when the exact gradients would not fit the memory budget.
    import labelclean.order_parameters as op

    monkeypatch.setattr(op, "EXACT_MEMORY_BYTES", 10_000)
    monkeypatch.setattr(op, "AUTO_SKETCH_DIM", 2048)
    auto = collect_gradient_gram(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
    assert auto.sketch_dim == 2048
    np.testing.assert_allclose(auto.G, sketch.G, rtol=1e-12)


# ------------------------------------------------------------------ API and degenerate cases


def test_keys_are_exactly_the_documented_ones(data):
    """The flat float dict: eqs 5-9 keys, + eqs 10-15 keys with a split, + spectrum keys."""
    x, y, split = data
    model = make_model("logistic")
    kw = dict(batch_size=B, num_batches=4, generator=torch.Generator().manual_seed(0))
    plain = probe_order_parameters(model, x, y, **kw)
    assert list(plain) == list(BASE_KEYS)
    full = probe_order_parameters(model, x, y, split=split, spectrum=True, **kw)
    assert list(full) == list(BASE_KEYS) + list(SPLIT_KEYS) + list(SPECTRUM_KEYS)
    assert all(type(v) is float for v in full.values())
    assert DEFAULT_NUM_BATCHES >= 3


def test_degenerate_inputs(data):
    """Eqs 9, 13: K < 3 raises; empty groups and A_0 <= 0 give NaN for what is undefined."""
    x, y, split = data
    model = make_model("logistic")
    with pytest.raises(ValueError):
        probe_order_parameters(model, x, y, batch_size=B, num_batches=2)
    with pytest.raises(ValueError):
        probe_order_parameters(model, x, y, batch_size=N + 1)
    with pytest.raises(ValueError):
        probe_order_parameters(model, x, y, batch_size=B, split=split[:-1])
    with pytest.raises(ValueError):
        order_parameters_from_gram(np.eye(2))
    kw = dict(batch_size=B, num_batches=5, generator=torch.Generator().manual_seed(0))
    none_wrong = probe_order_parameters(model, x, y, split=np.zeros(N, bool), **kw)
    assert none_wrong["rho"] == 0.0
    for key in ("A_w", "A_0w", "R_cw", "R_aw"):
        assert math.isnan(none_wrong[key]), key
    for key in ("A_c", "A_0c", "R_ac", "A"):
        assert math.isfinite(none_wrong[key]), key
    assert none_wrong["A_0c"] == pytest.approx(none_wrong["A_0"], rel=1e-10)
    # Orthogonal minibatch gradients: A_0 = 0, the ratios that divide by it are NaN.
    est = order_parameters_from_gram(np.eye(6))
    assert est["A_0"] == 0.0 and est["A"] == 1.0 and est["D"] == 1.0
    for key in ("sigma_lambda2", "D_par", "A_perp"):
        assert math.isnan(est[key]), key
    assert np.all(np.isnan(leave_one_out_lambdas(np.eye(6))))
    assert spectrum_from_gram(np.eye(6)).sum() == pytest.approx(1.0)


def test_label_smoothing_probes_the_gradients_sgd_follows(data):
    """Eq 5 with the training loss a recipe smooths (models.RGB_RECIPE): the probe's
    ``A`` and ``A_0`` match the exact values of the smoothed loss's per-sample
    gradients, not those of plain cross-entropy."""
    x, y, _ = data
    model = make_model("mlp")
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None],
                               label_smoothing=0.3)

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    smoothed = exact_moments(torch.cat([g[k].reshape(len(x), -1) for k in params], 1).numpy(), B)
    plain = exact_moments(per_sample_grads(model, x, y), B)
    est = collect_gradient_gram(model, x, y, batch_size=B, num_batches=BIG_K,
                                generator=torch.Generator().manual_seed(0),
                                label_smoothing=0.3).order_parameters()
    assert abs(plain["A"] - smoothed["A"]) > 0.1 * smoothed["A"]  # the test can tell them apart
    assert est["A"] == pytest.approx(smoothed["A"], rel=0.02)
    assert est["A_0"] == pytest.approx(smoothed["A_0"], rel=0.04)
