"""Order parameters of the minibatch gradient ensemble (paper sections 2 and 4).

At fixed weights ``w`` the probe draws ``K`` independent minibatches, computes
each minibatch gradient ``g^mu = grad L^mu(w)`` (eq 3, cross-entropy averaged
over the minibatch, the loss SGD follows), and reduces everything to the
``K x K`` Gram matrix ``G[mu, nu] = g^mu . g^nu``. Every order parameter of
the paper is then a function of ``G`` (or, with a clean / mislabelled split, of
the Gram matrix of the ``2K`` per-group gradients), following the derivation in
``shared/notes/order-parameters.md``:

======================  ==========================================  ==========
quantity (paper eq)     estimator from the Gram matrix              kind
======================  ==========================================  ==========
``A`` (8)               ``mean_mu G[mu, mu]``                       unbiased
``A_0 = |g|^2`` (9)     ``mean_{mu != nu} G[mu, nu]``               unbiased
``R`` (6)               mean cosine over pairs ``mu != nu``         unbiased
``D = Tr C`` (5, 9)     ``A - A_0``                                 unbiased
``<(g^mu . g)^2>``      distinct triples (see the notes)            unbiased
``lambda_mu`` (7)       leave-one-out ``S_mu / ((K-1) A_0)``        mean = 1
``sigma_lambda2`` (9)   ``<(g^mu . g)^2> / A_0^2 - 1``              consistent
``D_par`` (9)           ``<(g^mu . g)^2> / A_0 - A_0``              consistent
``A_perp`` (8)          ``A - <(g^mu . g)^2> / A_0``                consistent
``A_c``, ``A_w`` (11)   diagonal means of the per-group Grams       unbiased
``|g_c|^2, |g_w|^2``    off-diagonal means of the per-group Grams   unbiased
``g_c . g_w``           mean of ``g_c^mu . g_w^nu``, all pairs      unbiased
``R_cw`` (13)           ``g_c.g_w / (|g_c| |g_w|)`` from the above  consistent
``A_0c``, ``A_0w``      ``(1-rho)^2 |g_c|^2``, ``rho^2 |g_w|^2``    unbiased
``R_ac``, ``R_aw``      ``g.g_c`` from ``g^mu . g_c^nu``, mu != nu  consistent
======================  ==========================================  ==========

(``R`` is the mean cosine between two independent minibatch gradients, and
the mean over distinct pairs is unbiased for it.) ``A = A_0 + A_perp + D_par``
holds exactly (to rounding) for the estimates. ``A_0`` is unbiased and can
come out negative when ``|g|`` is tiny against the noise (late in training);
the quantities that divide by it (``sigma_lambda2``, ``D_par``, ``A_perp``,
``R_ac``, ``R_aw``) are then NaN. Correlations (``R``'s) are not clipped to
``[-1, 1]``.

Sampling
--------
Each minibatch is ``B`` distinct samples drawn uniformly **without
replacement** (``numpy.random.Generator.choice(N, B, replace=False)``), like
the batches of :class:`~labelclean.training.Trainer`; different minibatches
are drawn independently of each other. The exact ensemble moments are
therefore ``A = |g|^2 + Tr(S) / B * (N - B) / (N - 1)`` with ``S`` the
per-sample covariance. The probe uses the raw inputs: no augmentation, no
autocast, and the cross-entropy loss without weight decay (``grad L``, not the
SGD step).

The model is probed in the mode it is in (train mode: batch-norm batch
statistics, what SGD sees) and left bit-identical: buffers (batch-norm running
statistics, ``num_batches_tracked``) are saved and restored, the global RNG
state is forked (dropout), gradients are taken with :func:`torch.autograd.grad`
so no ``.grad`` is touched, and no optimiser is involved. With a split, each
minibatch is forwarded once as a whole (batch statistics over all ``B``
samples) and back-propagated twice, once from the mean loss of each group.

Memory
------
With ``V = K`` gradient vectors (``2K`` with a split) of ``N_p`` parameters,
the exact path stores them as one ``(V, N_p)`` float32 tensor on the model's
device (float64 for float64 models) and forms ``G`` in float64 in column
chunks of at most 64 MiB. When that tensor would exceed
:data:`EXACT_MEMORY_BYTES` (1 GiB), or when ``max_dim < N_p`` is given, each
gradient is compressed by a CountSketch (every parameter hashed to one of
``d`` buckets with a random sign; ``d = max_dim``, default
:data:`AUTO_SKETCH_DIM` = 131072): memory ``4 V d`` bytes plus ``12 N_p``
bytes of hash tables, cost one ``index_add`` per parameter tensor per
gradient. The sketch is unbiased for every inner product; the relative error
of ``|g^mu|^2`` is about ``sqrt(2 / d)`` (0.4 % at the default ``d``) and that
of an off-diagonal mean such as ``A_0`` about ``sqrt(2 / d) (A_0 + 2 D / K) /
A_0``, well under the Monte-Carlo error of ``K`` minibatches
(``test_sketch_matches_exact_products``).

Cost
----
One forward and one backward pass per minibatch (one forward and two backward
passes with a split), i.e. roughly ``K`` (``observers.PROBE_STEPS_PER_BATCH * K``
with a split) training steps' worth of work, plus a ``V x V`` product of the stored
gradients. ``python -m labelclean.order_parameters K THREADS`` times a probe
against a training step for two reference models on random MNIST-shaped data;
what it measured, and the spread of the estimates at ``K = 16``, are in
docs/performance.md ("The order-parameter probe"). The default ``K = 16`` keeps
a probe with the split a small share of an MNIST epoch for a real network;
probe every other epoch, or raise ``K``, when more precision is wanted. The
estimates' spread shrinks like ``1 / sqrt(K)``.

``sigma_lambda2`` is a ratio with ``A_0^2`` in the denominator: once ``A_0``
is within its noise (exploration, phase IV) it is unreliable at small ``K``
(it can come out negative), and even when ``A_0`` is well measured it is
biased low at small ``K``. The spectrum resolves at most ``K - 1 = 15``
eigenvalues at the default, so ``D_s`` near ``K - 1`` is only a lower bound;
the paper's ``D_s ~ 100`` needs ``K`` of several hundred.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Default number of independent minibatches per probe (see "Cost" above).
DEFAULT_NUM_BATCHES = 16
#: Above this many bytes of stored gradients the probe switches to a CountSketch.
EXACT_MEMORY_BYTES = 1 << 30
#: Sketch dimension used when the switch is automatic (``max_dim=None``).
AUTO_SKETCH_DIM = 1 << 17
#: Fraction of the total variance that defines the effective dimension ``D_s``.
SPECTRUM_FRACTION = 0.9
#: Column-chunk size (bytes of float64) when forming the Gram matrix.
_GRAM_CHUNK_BYTES = 1 << 26

BASE_KEYS = ("A", "A_0", "R", "sigma_lambda2", "D", "A_perp", "D_par")
SPLIT_KEYS = ("A_c", "A_w", "A_0c", "A_0w", "R_cw", "R_ac", "R_aw", "rho")
SPECTRUM_KEYS = ("D_s", "spectrum_resolution")

_NAN = float("nan")


# --------------------------------------------------------------------------- estimators


def _check_gram(G: np.ndarray) -> np.ndarray:
    G = np.asarray(G, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"Gram matrix must be square, got shape {G.shape}")
    if G.shape[0] < 3:
        raise ValueError(f"need at least 3 minibatches (K >= 3), got K = {G.shape[0]}")
    return G


def _offdiag_mean(M: np.ndarray, rows: np.ndarray | None = None, cols: np.ndarray | None = None):
    """Mean of ``M[mu, nu]`` over ``mu != nu`` with ``rows[mu]`` and ``cols[nu]``."""
    k = M.shape[0]
    r = np.ones(k, bool) if rows is None else np.asarray(rows, bool)
    c = np.ones(k, bool) if cols is None else np.asarray(cols, bool)
    w = np.outer(r, c)
    np.fill_diagonal(w, False)
    n = int(w.sum())
    return float(M[w].sum() / n) if n else _NAN


def _ratio(num: float, den2: float) -> float:
    """``num / sqrt(den2)``, NaN unless ``den2 > 0`` (a product of squared norms)."""
    if not (math.isfinite(num) and math.isfinite(den2)) or den2 <= 0:
        return _NAN
    return float(num / math.sqrt(den2))


def leave_one_out_lambdas(G: np.ndarray) -> np.ndarray:
    """Leave-one-out projections ``lambda_mu = g^mu . g / |g|^2`` (eq 7).

    ``g`` is replaced by the mean of the *other* minibatch gradients so that
    numerator and denominator are unbiased: ``lambda_mu = S_mu / ((K-1) A_0)``
    with ``S_mu = sum_{nu != mu} G[mu, nu]``. Their mean is exactly 1 by
    construction (eq 9's ``<lambda> = 1``). NaN where ``A_0 == 0``.
    """
    G = _check_gram(G)
    k = G.shape[0]
    s = G.sum(1) - np.diag(G)
    a0 = s.sum() / (k * (k - 1))
    if a0 == 0 or not math.isfinite(a0):
        return np.full(k, _NAN)
    return s / ((k - 1) * a0)


def order_parameters_from_gram(G: np.ndarray) -> dict[str, float]:
    """The paper's eqs 5-9 from the Gram matrix of ``K`` independent minibatch gradients.

    Returns ``A`` (eq 8, diagonal mean, unbiased), ``A_0 = |g|^2`` (eq 9,
    off-diagonal mean, unbiased), ``R`` (eq 6, mean cosine over distinct pairs,
    unbiased), ``D = Tr C = A - A_0`` (eqs 5, 9, unbiased), and, from the
    distinct-triple estimate ``T`` of ``<(g^mu . g)^2>`` (unbiased),
    ``sigma_lambda2 = T / A_0^2 - 1``, ``D_par = T / A_0 - A_0`` and
    ``A_perp = A - T / A_0`` (eqs 8-9; ratios of unbiased estimates, hence
    consistent). ``A = A_0 + A_perp + D_par`` holds exactly. The last three are
    NaN when ``A_0 <= 0``.
    """
    G = _check_gram(G)
    k = G.shape[0]
    diag = np.diag(G).copy()
    off = G - np.diag(diag)
    A = float(diag.mean())
    s = off.sum(1)
    a0 = float(s.sum() / (k * (k - 1)))
    if np.all(diag > 0):
        cos = off / np.sqrt(np.outer(diag, diag))
        R = float(cos.sum() / (k * (k - 1)))
    else:
        R = _NAN
    # <(g^mu . g)^2> over distinct triples (mu, nu, rho): S_mu^2 minus the nu == rho terms.
    t = float(np.mean((s**2 - (off**2).sum(1)) / ((k - 1) * (k - 2))))
    if a0 > 0 and math.isfinite(a0):
        sigma = t / a0**2 - 1.0
        d_par = t / a0 - a0
        a_perp = A - t / a0
    else:
        sigma = d_par = a_perp = _NAN
    return {
        "A": A,
        "A_0": a0,
        "R": R,
        "sigma_lambda2": float(sigma),
        "D": A - a0,
        "A_perp": float(a_perp),
        "D_par": float(d_par),
    }


def split_order_parameters_from_grams(
    G: np.ndarray,
    G_cc: np.ndarray,
    G_ww: np.ndarray,
    G_cw: np.ndarray,
    n_c: np.ndarray,
    n_w: np.ndarray,
    rho: float,
) -> dict[str, float]:
    """The split quantities of eqs 10-15 from the per-group Gram matrices.

    ``G_cc[mu, nu] = g_c^mu . g_c^nu``, ``G_ww`` likewise, and
    ``G_cw[mu, nu] = g_c^mu . g_w^nu``, where ``g_c^mu`` is the mean loss
    gradient over the ``n_c[mu]`` clean samples of minibatch ``mu`` (zero, and
    ignored, when ``n_c[mu] == 0``); ``G`` is the full Gram matrix and
    ``g^mu = (n_c g_c^mu + n_w g_w^mu) / B``.

    * ``A_c, A_w`` (eqs 11-12): diagonal means over minibatches with a
      non-empty group (unbiased for the ensemble conditioned on that).
    * ``|g_c|^2, |g_w|^2``: off-diagonal means (unbiased); ``g_c . g_w``: the
      mean over all pairs, ``mu == nu`` included (the two halves of one
      minibatch share no sample and, given the group sizes, are independent).
    * ``R_cw`` (eq 13), ``A_0c = (1-rho)^2 |g_c|^2``, ``A_0w = rho^2 |g_w|^2``
      (section 4); ``R_ac = g.g_c / (|g| |g_c|)`` with ``g . g_c`` from
      ``g^mu . g_c^nu`` over ``mu != nu`` (unbiased) and ``|g|^2 = A_0``;
      ``R_aw`` likewise. Ratios are consistent, NaN when a squared norm
      estimate is ``<= 0`` or a group is empty.
    """
    G = _check_gram(G)
    k = G.shape[0]
    G_cc, G_ww, G_cw = (np.asarray(m, dtype=np.float64) for m in (G_cc, G_ww, G_cw))
    n_c = np.asarray(n_c, dtype=np.float64)
    n_w = np.asarray(n_w, dtype=np.float64)
    b = n_c + n_w
    a_c, a_w = n_c / b, n_w / b
    vc, vw = n_c > 0, n_w > 0
    A_c = float(np.diag(G_cc)[vc].mean()) if vc.any() else _NAN
    A_w = float(np.diag(G_ww)[vw].mean()) if vw.any() else _NAN
    gc2 = _offdiag_mean(G_cc, vc, vc)
    gw2 = _offdiag_mean(G_ww, vw, vw)
    gcgw = float(G_cw[np.ix_(vc, vw)].mean()) if vc.any() and vw.any() else _NAN
    # g^mu . g_c^nu and g^mu . g_w^nu from the pieces of g^mu.
    g_ac = a_c[:, None] * G_cc + a_w[:, None] * G_cw.T
    g_aw = a_c[:, None] * G_cw + a_w[:, None] * G_ww
    gac = _offdiag_mean(g_ac, None, vc)
    gaw = _offdiag_mean(g_aw, None, vw)
    a0 = float((G.sum() - np.trace(G)) / (k * (k - 1)))
    return {
        "A_c": A_c,
        "A_w": A_w,
        "A_0c": float((1 - rho) ** 2 * gc2),
        "A_0w": float(rho**2 * gw2),
        "R_cw": _ratio(gcgw, gc2 * gw2) if gc2 > 0 and gw2 > 0 else _NAN,
        "R_ac": _ratio(gac, a0 * gc2) if a0 > 0 and gc2 > 0 else _NAN,
        "R_aw": _ratio(gaw, a0 * gw2) if a0 > 0 and gw2 > 0 else _NAN,
        "rho": float(rho),
    }


def spectrum_from_gram(G: np.ndarray) -> np.ndarray:
    """Eigenvalues of the sample covariance of the ``K`` gradients (eq 5, figure 2).

    The sample covariance (``1/(K-1)`` normalisation, unbiased for ``C``) has
    the same non-zero eigenvalues as the centred Gram matrix ``H G H / (K-1)``,
    ``H = I - 11^T/K``; returns the ``K - 1`` largest, descending, clipped at 0.
    Their sum is exactly the estimate ``D = A - A_0``. Only ``K - 1``
    directions are resolved; the small eigenvalues are biased low and the large
    ones high, as for any sample covariance, until ``K >> D_s``.
    """
    G = _check_gram(G)
    k = G.shape[0]
    c = (G - G.mean(0)[None, :] - G.mean(1)[:, None] + G.mean()) / (k - 1)  # H G H / (K-1)
    ev = np.linalg.eigvalsh((c + c.T) / 2)[::-1][: k - 1]
    return np.clip(ev, 0.0, None)


def effective_dimension(eigenvalues: np.ndarray, fraction: float = SPECTRUM_FRACTION) -> float:
    """``D_s``: the fewest leading eigenvalues holding ``fraction`` of the variance (section 3).

    Bounded by the number of eigenvalues given (``K - 1`` from a probe).
    """
    ev = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    total = ev.sum()
    if not total > 0:
        return _NAN
    cs = np.cumsum(ev) / total
    return float(np.argmax(cs >= fraction * (1 - 1e-12)) + 1)


# --------------------------------------------------------------------------- the probe


@dataclass(frozen=True)
class GradientGram:
    """The Gram matrices of one probe; every order parameter is a function of them.

    ``G`` is ``K x K`` (``g^mu . g^nu``); with a split, ``G_cc``, ``G_ww``,
    ``G_cw`` (``g_c^mu . g_w^nu``), the group sizes ``n_c``, ``n_w`` per
    minibatch and ``rho`` are set. ``sketch_dim`` is the CountSketch dimension,
    ``None`` when the products are exact.
    """

    G: np.ndarray
    batch_size: int
    num_params: int
    sketch_dim: int | None = None
    G_cc: np.ndarray | None = None
    G_ww: np.ndarray | None = None
    G_cw: np.ndarray | None = None
    n_c: np.ndarray | None = None
    n_w: np.ndarray | None = None
    rho: float | None = None

    @property
    def num_batches(self) -> int:
        return int(self.G.shape[0])

    def order_parameters(self, spectrum: bool = False) -> dict[str, float]:
        """The flat float dict of :func:`probe_order_parameters`."""
        out = order_parameters_from_gram(self.G)
        if self.G_cc is not None:
            out.update(
                split_order_parameters_from_grams(
                    self.G, self.G_cc, self.G_ww, self.G_cw, self.n_c, self.n_w, self.rho
                )
            )
        if spectrum:
            out["D_s"] = effective_dimension(self.eigenvalues())
            out["spectrum_resolution"] = float(self.num_batches - 1)
        return out

    def eigenvalues(self) -> np.ndarray:
        """The ``K - 1`` resolved eigenvalues of ``C``, descending (:func:`spectrum_from_gram`)."""
        return spectrum_from_gram(self.G)


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    raise ValueError("model has no parameters")


def collect_gradient_gram(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    num_batches: int = DEFAULT_NUM_BATCHES,
    split: np.ndarray | None = None,
    generator: torch.Generator | None = None,
    max_dim: int | None = None,
    label_smoothing: float = 0.0,
) -> GradientGram:
    """Draw ``num_batches`` minibatches, take their gradients and return the Gram matrices.

    The work behind :func:`probe_order_parameters` and :func:`gradient_spectrum`;
    call it once and use :meth:`GradientGram.order_parameters` and
    :meth:`GradientGram.eigenvalues` to get both from one set of backward
    passes. Arguments as for :func:`probe_order_parameters`.
    """
    k = int(num_batches)
    if k < 3:
        raise ValueError(f"num_batches must be >= 3 (pairs and triples of minibatches), got {k}")
    n = int(y.shape[0])
    if int(x.shape[0]) != n:
        raise ValueError(f"x has {x.shape[0]} rows but y has {n}")
    bsz = int(batch_size)
    if not 1 <= bsz <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
    if max_dim is not None and int(max_dim) < 1:
        raise ValueError(f"max_dim must be positive, got {max_dim}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    device = _device_of(model)
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    sizes = [p.numel() for p in params]
    n_params = int(sum(sizes))

    split_t = None
    rho = None
    if split is not None:
        if isinstance(split, torch.Tensor):
            split = split.detach().cpu().numpy()
        mask = np.asarray(split, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"split must be a boolean array of shape ({n},), got {mask.shape}")
        rho = float(mask.mean())
        split_t = torch.from_numpy(mask.copy())
    n_vec = k if split_t is None else 2 * k

    if generator is None:  # one draw from the global RNG keeps repeated probes reproducible
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,)).item()))
    # numpy's choice(replace=False) costs O(B) per minibatch where randperm costs O(N).
    draw = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator).item()))
    indices = [torch.from_numpy(draw.choice(n, bsz, replace=False)) for _ in range(k)]
    sketch_seed = int(draw.integers(2**62))

    itemsize = 8 if dtype == torch.float64 else 4
    if max_dim is None:
        sketch_dim = AUTO_SKETCH_DIM if n_vec * n_params * itemsize > EXACT_MEMORY_BYTES else None
    else:
        sketch_dim = int(max_dim) if n_params > int(max_dim) else None

    if sketch_dim is None:
        offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        store = torch.zeros((n_vec, n_params), dtype=dtype, device=device)

        def write(row: int, grads) -> None:
            for i, g in enumerate(grads):
                if g is not None:
                    store[row, offsets[i] : offsets[i + 1]].copy_(g.reshape(-1))

    else:
        hgen = torch.Generator().manual_seed(sketch_seed)
        buckets = [torch.randint(sketch_dim, (s,), generator=hgen).to(device) for s in sizes]
        signs = [
            (torch.randint(2, (s,), generator=hgen) * 2 - 1).to(device=device, dtype=dtype)
            for s in sizes
        ]
        store = torch.zeros((n_vec, sketch_dim), dtype=dtype, device=device)

        def write(row: int, grads) -> None:
            for i, g in enumerate(grads):
                if g is not None:
                    store[row].index_add_(0, buckets[i], g.reshape(-1).to(dtype) * signs[i])

    n_c = np.zeros(k, dtype=np.int64)
    n_w = np.zeros(k, dtype=np.int64)
    saved = [b.detach().clone() for b in model.buffers()]
    fork_devices = []
    if device.type == "cuda":
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    try:
        with torch.random.fork_rng(devices=fork_devices), torch.enable_grad():
            for mu, idx in enumerate(indices):
                xb = x[idx.to(x.device)].to(device, non_blocking=True)
                yb = y[idx.to(y.device)].to(device, non_blocking=True)
                per = F.cross_entropy(model(xb), yb, reduction="none",
                                      label_smoothing=label_smoothing)
                if split_t is None:
                    write(mu, torch.autograd.grad(per.mean(), params, allow_unused=True))
                    continue
                wrong = split_t[idx].to(device)
                nw = int(wrong.sum())
                nc = bsz - nw
                n_c[mu], n_w[mu] = nc, nw
                if nc:
                    loss_c = per[~wrong].mean()
                    write(
                        mu,
                        torch.autograd.grad(loss_c, params, retain_graph=nw > 0, allow_unused=True),
                    )
                if nw:
                    loss_w = per[wrong].mean()
                    write(k + mu, torch.autograd.grad(loss_w, params, allow_unused=True))
    finally:
        with torch.no_grad():
            for b, s in zip(model.buffers(), saved, strict=True):
                b.copy_(s)

    gram = _gram(store)
    if split_t is None:
        return GradientGram(gram, bsz, n_params, sketch_dim)
    g_cc, g_ww, g_cw = gram[:k, :k], gram[k:, k:], gram[:k, k:]
    a_c, a_w = n_c / bsz, n_w / bsz
    full = (
        np.outer(a_c, a_c) * g_cc
        + np.outer(a_w, a_w) * g_ww
        + np.outer(a_c, a_w) * g_cw
        + np.outer(a_w, a_c) * g_cw.T
    )
    return GradientGram(
        full, bsz, n_params, sketch_dim, g_cc.copy(), g_ww.copy(), g_cw.copy(), n_c, n_w, rho
    )


def _gram(store: torch.Tensor) -> np.ndarray:
    """``store @ store.T`` in float64, over column chunks of bounded size."""
    v, width = store.shape
    chunk = max(1, _GRAM_CHUNK_BYTES // (8 * v))
    out = torch.zeros((v, v), dtype=torch.float64, device=store.device)
    for s in range(0, width, chunk):
        part = store[:, s : s + chunk].double()
        out += part @ part.T
    return out.cpu().numpy()


def probe_order_parameters(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    num_batches: int = DEFAULT_NUM_BATCHES,
    split: np.ndarray | None = None,
    spectrum: bool = False,
    generator: torch.Generator | None = None,
    max_dim: int | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, float]:
    """Estimate the paper's order parameters at the model's current weights.

    Implements eqs 5-9 (``A``, ``A_0``, ``R``, ``sigma_lambda2``, ``D``,
    ``A_perp``, ``D_par``) and, with ``split``, eqs 10-15 (``A_c``, ``A_w``,
    ``A_0c``, ``A_0w``, ``R_cw``, ``R_ac``, ``R_aw``, ``rho``) from the Gram
    matrix of ``num_batches`` independent minibatch gradients; the estimator of
    each quantity and whether it is unbiased or consistent is in the module
    docstring. With ``spectrum`` also ``D_s`` (effective dimension at 90 % of
    ``Tr C``, section 3) and ``spectrum_resolution = K - 1``, the most ``D_s``
    can be (use :func:`gradient_spectrum` or :func:`collect_gradient_gram` for
    the eigenvalues themselves).

    Parameters
    ----------
    model:
        Takes raw ``x[idx]`` and returns logits. Probed in its current mode and
        left bit-identical (buffers restored, no ``.grad`` touched, global RNG
        forked).
    x, y:
        All ``N`` training inputs and ``int64`` labels (CPU or the model's
        device; batches are moved to the model's device).
    batch_size:
        ``B``, the training minibatch size. Each minibatch is ``B`` distinct
        samples drawn uniformly without replacement; minibatches are
        independent.
    num_batches:
        ``K >= 3``; default :data:`DEFAULT_NUM_BATCHES` (see "Cost" in the module docstring).
    split:
        Boolean ``(N,)``, ``True`` for the mislabelled part; ``rho`` is its
        mean. Per minibatch one forward and one backward per non-empty group.
    spectrum:
        Also return ``D_s`` and ``spectrum_resolution``.
    generator:
        CPU generator for the minibatch draws (and the sketch hashes). ``None``
        draws a seed from the global torch RNG (one draw).
    max_dim:
        Compress gradients by a CountSketch of this dimension when the model
        has more parameters; ``None`` sketches (to 131072) only when the exact
        stored gradients would exceed 1 GiB. See "Memory".
    label_smoothing:
        The training loss's label smoothing: the minibatch gradients are those of
        the loss SGD follows (plain cross-entropy, the paper's, by default).

    Returns
    -------
    dict[str, float]
        Exactly the keys of :data:`BASE_KEYS` (+ :data:`SPLIT_KEYS` with a
        split, + :data:`SPECTRUM_KEYS` with ``spectrum``). NaN marks a quantity
        that is undefined for this probe (``A_0 <= 0``, an empty group).

    Raises
    ------
    ValueError
        ``num_batches < 3``, a ``batch_size`` outside ``[1, N]``, a ``split``
        of the wrong shape.
    """
    gram = collect_gradient_gram(
        model,
        x,
        y,
        batch_size=batch_size,
        num_batches=num_batches,
        split=split,
        generator=generator,
        max_dim=max_dim,
        label_smoothing=label_smoothing,
    )
    return gram.order_parameters(spectrum=spectrum)


def gradient_spectrum(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    num_batches: int = DEFAULT_NUM_BATCHES,
    generator: torch.Generator | None = None,
    max_dim: int | None = None,
) -> np.ndarray:
    """The ``K - 1`` resolved eigenvalues of the noise covariance ``C`` (eq 5, figure 2).

    Descending; their sum is the estimate of ``D = Tr C``. Arguments as for
    :func:`probe_order_parameters`. See :func:`spectrum_from_gram` for the
    resolution limit.
    """
    gram = collect_gradient_gram(
        model,
        x,
        y,
        batch_size=batch_size,
        num_batches=num_batches,
        generator=generator,
        max_dim=max_dim,
    )
    return gram.eigenvalues()


# --------------------------------------------------------------------------- timing


def _benchmark(num_batches: int = DEFAULT_NUM_BATCHES, batch_size: int = 128) -> None:
    """Seconds per probe for the two reference models on random MNIST-shaped data."""
    import time

    from .models import create_model

    torch.manual_seed(0)
    n = 60_000
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (n,))
    split = np.random.default_rng(0).random(n) < 0.5
    mean, std = torch.full((1, 1, 1), 33.0), torch.full((1, 1, 1), 78.0)
    for name in ("mlp:30,30", "lcnet_050"):
        model = create_model(name, (1, 28, 28), 10, mean, std).train()
        n_p = sum(p.numel() for p in model.parameters())
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        for _ in range(3):  # warm-up
            loss = F.cross_entropy(model(x[:batch_size]), y[:batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
        t0 = time.perf_counter()
        steps = 10
        for s in range(steps):
            sl = slice(s * batch_size, (s + 1) * batch_size)
            loss = F.cross_entropy(model(x[sl]), y[sl])
            opt.zero_grad()
            loss.backward()
            opt.step()
        step = (time.perf_counter() - t0) / steps
        times = {}
        for label, sp in (("no split", None), ("split", split)):
            gen = torch.Generator().manual_seed(0)
            probe_order_parameters(
                model, x, y, batch_size=batch_size, num_batches=3, split=sp, generator=gen
            )
            t0 = time.perf_counter()
            probe_order_parameters(
                model, x, y, batch_size=batch_size, num_batches=num_batches, split=sp, generator=gen
            )
            times[label] = time.perf_counter() - t0
        epoch_steps = math.ceil(n / batch_size)
        print(
            f"{name}: N_p={n_p}, train step {step * 1e3:.1f} ms; "
            + "; ".join(
                f"probe {k} K={num_batches}: {t:.2f} s = {t / step:.0f} steps = "
                f"{100 * t / (step * epoch_steps):.1f}% of a {epoch_steps}-step epoch"
                for k, t in times.items()
            )
        )


if __name__ == "__main__":  # python -m labelclean.order_parameters [K [threads]]
    import sys

    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    _benchmark(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_NUM_BATCHES)
