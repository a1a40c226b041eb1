"""The two-population model of per-sample losses (paper section 5).

At a given epoch the per-sample losses are modelled as
``l ~ (1 - r) N(m_c, s_c^2) + r N(m_w, s_w^2)``: a low-loss, clean population
and a high-loss, mislabelled one. :func:`fit_loss_mixture` fits it with
scikit-learn's :class:`~sklearn.mixture.GaussianMixture` (on the host) or the
same EM in torch (on an accelerator, where the model trains) and returns a
:class:`LossMixture` holding the paper's parameters, the separation
``delta_L = m_w - m_c``, the threshold ``l_c`` and a decision on whether a
second population is there at all.

Is there a second population?
-----------------------------
A two-component fit always finds two components, even on a clean dataset,
where the "high-loss component" is only the tail of hard examples. Three tests
must all pass before anything is flagged:

* BIC prefers two components over one (``bic_2 < bic_1``),
* the components are separated: Ashman's ``D = sqrt(2) |m_w - m_c| /
  sqrt(s_c^2 + s_w^2)`` is at least ``MIN_SEPARATION``. ``D > 2`` is the
  usual criterion for a mixture of two Gaussians to be cleanly bimodal
  (Ashman, Bird & Zepf 1994); a loss tail fitted by a broad component has
  ``D`` well below it, and
* the smaller component holds at least ``MIN_COMPONENT_WEIGHT`` of the
  samples: a few outliers fitted by a needle-thin component far out would
  otherwise pass with an enormous ``D``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

#: Ashman's D below which two fitted components count as one population.
MIN_SEPARATION = 2.0
#: Smallest weight either component must have to count as a population.
MIN_COMPONENT_WEIGHT = 0.005
#: Losses are subsampled to this many points for the fit (the fit is 1-D).
MAX_FIT_POINTS = 20_000
#: Keeps the fit's subsample independent of other ``default_rng(seed)`` draws.
_SUBSAMPLE_SALT = 0x6C63


@dataclass(frozen=True)
class LossMixture:
    """A fitted two-component Gaussian mixture of per-sample losses.

    Attributes
    ----------
    m_c, s_c:
        Mean and standard deviation of the low-loss ("clean") component.
    m_w, s_w:
        Mean and standard deviation of the high-loss ("wrong") component.
    r:
        Weight of the high-loss component: the estimated noise rate.
    delta_L:
        ``m_w - m_c``, the paper's separation.
    threshold:
        ``l_c``: the loss between the two means where the weighted component
        densities are equal (the midpoint when they never cross there).
    separation:
        Ashman's D (see the module docstring).
    bic_1, bic_2:
        BIC of a one- and a two-component fit.
    bimodal:
        Whether a second population was found (BIC and separation tests).
    """

    m_c: float
    s_c: float
    m_w: float
    s_w: float
    r: float
    delta_L: float
    threshold: float
    separation: float
    bic_1: float
    bic_2: float
    bimodal: bool

    def posterior(self, losses: np.ndarray) -> np.ndarray:
        """P(high-loss component | loss) for each loss: ``p_noisy``."""
        x = np.asarray(losses, dtype=np.float64)
        log_c = math.log(max(1 - self.r, 1e-12)) + _log_normal(x, self.m_c, self.s_c)
        log_w = math.log(max(self.r, 1e-12)) + _log_normal(x, self.m_w, self.s_w)
        p = 1.0 / (1.0 + np.exp(np.clip(log_c - log_w, -700, 700)))
        # Above the upper mean a sample is at least as suspect as at the mean:
        # the narrower clean Gaussian must not win back the far tail.
        p = np.where(x > self.m_w, np.maximum(p, self.posterior_at(self.m_w)), p)
        return p.astype(np.float32)

    @property
    def expected_f1(self) -> float:
        """The F1 the mixture expects of its own flags (``loss > threshold``).

        Under the fitted model a fraction ``r`` of samples is mislabelled with
        losses ``N(m_w, s_w^2)``: expected TP = ``r P(N(m_w, s_w) > l_c)``,
        FN = ``r P(N(m_w, s_w) <= l_c)``, FP = ``(1 - r) P(N(m_c, s_c) > l_c)``.
        It uses nothing but the fitted parameters (no labels): it is high only
        when the two components barely overlap *at the threshold*, weighting
        the overlap by how many samples each component holds. 0 when the
        mixture is not bimodal.
        """
        if not self.bimodal or not 0 < self.r < 1:
            return 0.0
        tail_w = _upper_tail(self.threshold, self.m_w, self.s_w)
        tail_c = _upper_tail(self.threshold, self.m_c, self.s_c)
        tp = self.r * tail_w
        fn = self.r * (1 - tail_w)
        fp = (1 - self.r) * tail_c
        return float(2 * tp / max(2 * tp + fp + fn, 1e-12))

    def posterior_at(self, loss: float) -> float:
        x = np.array(loss)
        log_c = math.log(max(1 - self.r, 1e-12)) + float(_log_normal(x, self.m_c, self.s_c))
        log_w = math.log(max(self.r, 1e-12)) + float(_log_normal(x, self.m_w, self.s_w))
        return 1.0 / (1.0 + math.exp(max(-700.0, min(700.0, log_c - log_w))))

    def to_dict(self) -> dict:
        return asdict(self)


#: The fit backends :func:`fit_loss_mixture` knows ("auto": torch for tensors on
#: an accelerator, scikit-learn otherwise).
BACKENDS = ("auto", "sklearn", "torch")
#: Regularisation added to each variance, and the EM stopping rule: both
#: scikit-learn's ``GaussianMixture`` defaults, so the two backends agree.
_REG_VAR, _EM_TOL, _EM_MAX_ITER = 1e-6, 1e-3, 100


def fit_loss_mixture(losses: np.ndarray | torch.Tensor, seed: int = 0,
                     backend: str = "auto") -> LossMixture:
    """Fit the two-component mixture of section 5 to per-sample ``losses``.

    Parameters
    ----------
    losses:
        One non-negative loss per sample (any shape; flattened): an array, or
        a tensor on any device.
    seed:
        Seeds the k-means initialisation and the subsample, for reproducibility.
    backend:
        ``"sklearn"``: scikit-learn's ``GaussianMixture`` (k-means
        initialisation, 3 restarts) on the host. ``"torch"``: the same EM in
        float64 on the tensor's device, initialised by the exact 1-D two-means
        split (the optimum those restarts look for), so a GPU run never takes
        the losses to the host for the fit. ``"auto"``: torch for tensors on an
        accelerator, scikit-learn otherwise.

    Returns
    -------
    LossMixture
        Components ordered so that ``m_c <= m_w``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    on_device = isinstance(losses, torch.Tensor) and losses.device.type != "cpu"
    if backend == "torch" or (backend == "auto" and on_device):
        return _fit_torch(torch.as_tensor(losses), seed)
    if isinstance(losses, torch.Tensor):
        losses = losses.detach().cpu().numpy()
    x = np.asarray(losses, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if len(x) < 4:
        raise ValueError("need at least 4 finite losses to fit a mixture")
    fit_x = x[_subsample(len(x), seed)]
    mu1, sd1 = float(fit_x.mean()), float(fit_x.std())
    if sd1 < 1e-9:
        return _degenerate(mu1)
    bic_1 = _bic_one(len(fit_x), sd1)
    gm = GaussianMixture(2, covariance_type="full", random_state=seed, reg_covar=_REG_VAR,
                         n_init=3, tol=_EM_TOL, max_iter=_EM_MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(fit_x[:, None])
    bic_2 = float(gm.bic(fit_x[:, None]))
    return _mixture(gm.means_.ravel(), np.sqrt(gm.covariances_.ravel()), gm.weights_,
                    bic_1, bic_2)


def _subsample(n: int, seed: int) -> np.ndarray | slice:
    """The points the fit uses: all, or ``MAX_FIT_POINTS`` drawn without replacement."""
    if n <= MAX_FIT_POINTS:
        return slice(None)
    # A salted stream: ``default_rng(seed).choice(n, k, replace=False)`` is also how
    # inject_noise picks the samples to corrupt, so an unsalted subsample with the
    # same seed would be drawn from the corrupted samples only.
    rng = np.random.default_rng([seed, _SUBSAMPLE_SALT])
    return rng.choice(n, MAX_FIT_POINTS, replace=False)


def _degenerate(mu: float) -> LossMixture:
    """All losses equal: one population, nothing to separate."""
    return LossMixture(mu, 0.0, mu, 0.0, 0.0, 0.0, mu, 0.0, 0.0, 0.0, False)


def _bic_one(n: int, sd: float) -> float:
    """BIC of one Gaussian (maximum likelihood, 2 parameters) fitted to ``n`` points."""
    return float(n * (math.log(2 * math.pi * sd**2) + 1) + 2 * math.log(n))


def _fit_torch(losses: torch.Tensor, seed: int) -> LossMixture:
    """:func:`fit_loss_mixture` with ``backend="torch"``: EM in float64 where
    ``losses`` lives; only the five fitted numbers and the two BICs leave it."""
    x = losses.detach().reshape(-1).to(torch.float64)
    x = x[torch.isfinite(x)]
    if len(x) < 4:
        raise ValueError("need at least 4 finite losses to fit a mixture")
    pick = _subsample(len(x), seed)
    if not isinstance(pick, slice):
        pick = torch.from_numpy(pick).to(x.device)
    x = x[pick]
    n = len(x)
    mu1, sd1 = x.mean(), x.std(unbiased=False)
    if float(sd1) < 1e-9:
        return _degenerate(float(mu1))
    # Exact two-means in 1-D: the best split of the sorted losses into a lower
    # and an upper block (what k-means converges to from a good start).
    xs = torch.sort(x).values
    k = torch.arange(1, n, device=x.device, dtype=torch.float64)
    head = torch.cumsum(xs, 0)[:-1]
    total = xs.sum()
    # between-block sum of squares, up to constants: maximised by the best split
    between = head**2 / k + (total - head) ** 2 / (n - k)
    cut = int(torch.argmax(between)) + 1
    upper = x >= xs[cut]
    resp = torch.stack([~upper, upper], 1).to(torch.float64)
    weights, means, variances = _m_step(x, resp)
    bound = -math.inf
    for _ in range(_EM_MAX_ITER):
        log_norm, resp = _e_step(x, weights, means, variances)
        weights, means, variances = _m_step(x, resp)
        new = float(log_norm.mean())
        if abs(new - bound) < _EM_TOL:
            break
        bound = new
    log_norm, _ = _e_step(x, weights, means, variances)
    bic_2 = float(-2 * log_norm.sum() + 5 * math.log(n))  # 2 means, 2 variances, 1 weight
    fitted = torch.stack([means, variances.sqrt(), weights]).cpu().numpy()
    return _mixture(fitted[0], fitted[1], fitted[2], _bic_one(n, float(sd1)), bic_2)


def _e_step(x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor,
            variances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point: the mixture's log density and the components' responsibilities."""
    log_p = (torch.log(weights) - 0.5 * torch.log(2 * math.pi * variances)
             - 0.5 * (x[:, None] - means) ** 2 / variances)
    log_norm = torch.logsumexp(log_p, 1)
    return log_norm, torch.exp(log_p - log_norm[:, None])


def _m_step(x: torch.Tensor, resp: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights, means and (regularised) variances from the responsibilities, as
    scikit-learn computes them."""
    nk = resp.sum(0) + 10 * torch.finfo(torch.float64).eps
    means = (resp * x[:, None]).sum(0) / nk
    variances = (resp * (x[:, None] - means) ** 2).sum(0) / nk + _REG_VAR
    return nk / len(x), means, variances


def _mixture(means: np.ndarray, sds: np.ndarray, weights: np.ndarray,
             bic_1: float, bic_2: float) -> LossMixture:
    """The :class:`LossMixture` of two fitted components, in either order."""
    lo, hi = (0, 1) if means[0] <= means[1] else (1, 0)
    m_c, m_w = float(means[lo]), float(means[hi])
    s_c, s_w = float(sds[lo]), float(sds[hi])
    r = float(weights[hi])
    separation = math.sqrt(2) * (m_w - m_c) / math.sqrt(s_c**2 + s_w**2)
    threshold = crossing(m_c, s_c, m_w, s_w, r)
    # A handful of outliers can form a tight component far out with a huge D;
    # a population of wrong labels worth the name holds a minimal share.
    minority = min(r, 1.0 - r)
    bimodal = bool(
        bic_2 < bic_1 and separation >= MIN_SEPARATION and minority >= MIN_COMPONENT_WEIGHT
    )
    return LossMixture(
        m_c=m_c, s_c=s_c, m_w=m_w, s_w=s_w, r=r, delta_L=m_w - m_c, threshold=threshold,
        separation=float(separation), bic_1=bic_1, bic_2=bic_2, bimodal=bimodal,
    )


def _upper_tail(x: float, m: float, s: float) -> float:
    """P(N(m, s^2) > x)."""
    if s <= 0:
        return float(x < m)
    return 0.5 * math.erfc((x - m) / (s * math.sqrt(2)))


def _log_normal(x: np.ndarray, m: float, s: float) -> np.ndarray:
    s = max(s, 1e-9)
    return -0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


def crossing(m_c: float, s_c: float, m_w: float, s_w: float, r: float) -> float:
    """The loss in (m_c, m_w) where ``(1-r) N(m_c, s_c) = r N(m_w, s_w)``: the
    threshold ``l_c`` of a two-Gaussian mixture with these parameters (what
    :func:`fit_loss_mixture` reports as ``threshold``).

    Taking logs gives a quadratic ``a l^2 + b l + c = 0``; we take its root
    between the means, or the midpoint when there is none.
    """
    mid = 0.5 * (m_c + m_w)
    if not (0 < r < 1) or s_c <= 0 or s_w <= 0 or m_w <= m_c:
        return mid
    a = 1 / (2 * s_w**2) - 1 / (2 * s_c**2)
    b = m_c / s_c**2 - m_w / s_w**2
    c = (
        m_w**2 / (2 * s_w**2) - m_c**2 / (2 * s_c**2)
        + math.log(s_w / s_c) + math.log((1 - r) / r)
    )
    if abs(a) < 1e-12:
        roots = [-c / b] if abs(b) > 1e-12 else []
    else:
        disc = b * b - 4 * a * c
        if disc < 0:
            return mid
        sq = math.sqrt(disc)
        roots = [(-b - sq) / (2 * a), (-b + sq) / (2 * a)]
    inside = [t for t in roots if m_c < t < m_w]
    return float(min(inside)) if inside else mid
