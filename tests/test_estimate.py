"""The run's estimate of its own flags (labelclean.estimate) and its canaries."""

from __future__ import annotations

import numpy as np
import pytest

from labelclean.canaries import canary_count, canary_labels, canary_rows, confusion
from labelclean.decision import CLEAN_SHARE, MIN_PRECISION, EpochDecision, TcPolicy
from labelclean.estimate import auc, estimate, noise_share, point
from labelclean.mixture import fit_loss_mixture


def synthetic(n: int, noise: float, m: int, rng: np.random.Generator, k: int = 4,
              clean_mean: float = -2.0, wrong_mean: float = 1.0):
    """Suspicion scores of ``n`` samples (a share ``noise`` wrong) and ``m`` canaries
    scored like the wrong ones; labels uniform over ``k`` classes."""
    wrong = rng.random(n) < noise
    scores = np.where(wrong, rng.normal(wrong_mean, 1.0, n), rng.normal(clean_mean, 1.0, n))
    canaries = rng.normal(wrong_mean, 1.0, m)
    return scores, wrong, canaries, rng.integers(0, k, n), rng.integers(0, k, m)


def test_interval_covers_the_truth_on_synthetic_runs() -> None:
    rng = np.random.default_rng(0)
    covered_p = covered_pi = 0
    errors = []
    for noise in (0.1, 0.4, 0.8):
        for _ in range(10):
            scores, wrong, canaries, y, cy = synthetic(3000, noise, 300, rng)
            est = estimate(scores, canaries, y, cy, ["a", "b", "c", "d"], reps=100)
            true_p = wrong[scores > 0].mean()
            covered_p += est.precision.low <= true_p <= est.precision.high
            covered_pi += est.noise_share.low <= wrong.mean() <= est.noise_share.high
            errors.append(abs(est.precision.value - true_p))
    # the 90% interval covers about 3 runs in 4 here: at 10% noise right labels
    # above the thresholds push the estimate up, and the bootstrap does not see it
    assert covered_p >= 20 and covered_pi >= 20
    assert np.mean(errors) < 0.06


def test_noise_share_is_the_mixture_proportion() -> None:
    rng = np.random.default_rng(1)
    scores, wrong, canaries, *_ = synthetic(20_000, 0.3, 2_000, rng, clean_mean=-4.0)
    assert abs(noise_share(scores, canaries) - 0.3) < 0.03
    precision, recall, pi, residual = point(scores, canaries, 0.0)
    assert abs(recall - (canaries > 0).mean()) < 1e-12
    assert abs(precision - wrong[scores > 0].mean()) < 0.1
    kept = scores <= 0
    assert abs(residual - wrong[kept].mean()) < 0.02  # the wrong labels the cut misses


def test_clean_run_estimates_no_wrong_labels() -> None:
    rng = np.random.default_rng(2)
    scores = rng.normal(-3.0, 1.0, 5000)
    canaries = rng.normal(1.0, 1.0, 250)
    est = estimate(scores, canaries, np.zeros(5000, int), np.zeros(250, int), ["a"], reps=50)
    assert est.noise_share.high < CLEAN_SHARE
    assert est.learned


def test_labels_no_better_than_random_are_not_learned() -> None:
    rng = np.random.default_rng(3)
    scores, canaries = rng.normal(0.5, 1.0, 5000), rng.normal(0.5, 1.0, 250)
    value, z = auc(scores, canaries)
    assert abs(value - 0.5) < 0.05 and abs(z) < 3
    est = estimate(scores, canaries, np.zeros(5000, int), np.zeros(250, int), ["a"], reps=20)
    assert not est.learned


def test_auc_counts_ties_half() -> None:
    assert auc(np.array([0.0, 0.0]), np.array([0.0]))[0] == pytest.approx(0.5)
    assert auc(np.array([0.0, 1.0]), np.array([2.0]))[0] == pytest.approx(1.0)


def _decision(scores: np.ndarray, canaries: np.ndarray) -> EpochDecision:
    return EpochDecision(epoch=5, scores=scores, mixture=fit_loss_mixture(scores),
                         noisy=True, ready=True, classes_learned=2,
                         would_flag=scores > 0, is_best=True, canary_scores=canaries, cut=0.0)


def test_flags_that_are_mostly_the_models_mistakes_are_withheld_by_the_estimate() -> None:
    # 5 % wrong labels, all flagged, but the model also errs on 20 % of the right ones:
    # precision about 0.2, and nothing but the estimate says so
    rng = np.random.default_rng(4)
    n = 4000
    wrong = rng.random(n) < 0.05
    mistaken = ~wrong & (rng.random(n) < 0.2)
    scores = np.where(wrong, rng.normal(3.0, 0.5, n),
                      np.where(mistaken, rng.normal(1.0, 0.5, n), rng.normal(-3.0, 1.0, n)))
    canaries = rng.normal(3.0, 0.5, 400)
    y, cy = rng.integers(0, 2, n), rng.integers(0, 2, 400)
    est = estimate(scores, canaries, y, cy, ["a", "b"], reps=100)
    assert est.precision.high < MIN_PRECISION
    verdict, flags = TcPolicy().estimate_verdict(_decision(scores, canaries), y, ["a", "b"], est)
    assert verdict.status == "withheld" and not flags.any()
    assert "not likely right" in verdict.reason
    forced, flags = TcPolicy().estimate_verdict(_decision(scores, canaries), y, ["a", "b"], est,
                                       force=True)
    assert forced.forced and flags.sum() == (scores > 0).sum()


def test_clear_flags_are_written_and_a_clean_run_has_no_population() -> None:
    rng = np.random.default_rng(5)
    scores, wrong, canaries, y, cy = synthetic(4000, 0.3, 400, rng, k=2)
    est = estimate(scores, canaries, y, cy, ["a", "b"], reps=100)
    verdict, flags = TcPolicy().estimate_verdict(_decision(scores, canaries), y, ["a", "b"], est)
    assert verdict.status == "flagged" and flags.sum() == (scores > 0).sum()
    clean = rng.normal(-3.0, 1.0, 4000)
    est = estimate(clean, canaries, y, cy, ["a", "b"], reps=50)
    verdict, flags = TcPolicy().estimate_verdict(_decision(clean, canaries), y, ["a", "b"], est)
    assert verdict.status == "no second population" and not flags.any()


def test_a_class_whose_flags_are_not_likely_right_is_named_for_review() -> None:
    rng = np.random.default_rng(6)
    n = 6000
    y = rng.integers(0, 2, n)
    wrong = rng.random(n) < 0.3
    # class 1's flags are the model's mistakes: its wrong labels are few, its
    # right ones often flagged
    wrong &= y == 0
    mistaken = (y == 1) & ~wrong & (rng.random(n) < 0.15)
    scores = np.where(wrong, rng.normal(2.0, 0.5, n),
                      np.where(mistaken, rng.normal(0.8, 0.3, n), rng.normal(-3.0, 1.0, n)))
    cy = rng.integers(0, 2, 600)
    canaries = rng.normal(2.0, 0.5, 600)
    est = estimate(scores, canaries, y, cy, ["a", "b"], reps=100)
    verdict, flags = TcPolicy().estimate_verdict(_decision(scores, canaries), y, ["a", "b"], est)
    # the class's own estimate sees it; the verdict names it rather than acting on
    # an estimate from a tenth of the samples
    assert est.per_class[1].precision.high < MIN_PRECISION <= est.per_class[0].precision.low
    assert verdict.status == "flagged" and verdict.classes_held == []
    assert "review with care in 'b'" in verdict.reason and "'a'" not in verdict.reason
    assert flags.sum() == (scores > 0).sum()


def test_canary_rows_are_a_fixed_draw_of_the_right_size() -> None:
    y = np.repeat(np.arange(10), 100)
    rows = canary_rows(y, 10, 0.05, seed=3)
    assert len(rows) == canary_count(1000, 10, 0.05) == 100  # at least 10 per class
    assert np.array_equal(rows, canary_rows(y, 10, 0.05, seed=3))
    assert len(np.unique(rows)) == len(rows)
    assert canary_count(100_000, 10, 0.05) == 5000 and canary_count(1000, 10, 0.0) == 0


def test_canary_labels_follow_the_datas_confusion_and_are_never_a_likely_true_class():
    k, m = 5, 2000
    # the data gives class t's samples label t + 1 (a pair flip) 30 % of the time
    pred = np.repeat(np.arange(k), 100)
    y = pred.copy()
    y[::3] = (pred[::3] + 1) % k
    counts = confusion(pred, y, k)
    assert counts[0, 1] == 34 and counts[0, 0] == 66
    given = np.arange(m) % k
    labels = canary_labels(given, given, counts, seed=0)
    assert (labels != given).all()
    assert np.mean(labels == (given + 1) % k) > 0.8
    # a sample the model sees as another class: neither that class nor its label
    top = (given + 2) % k
    labels = canary_labels(given, top, counts, seed=0)
    assert ((labels != given) & (labels != top)).all()
    assert np.mean(labels == (top + 1) % k) > 0.8


def test_an_estimate_run_reports_and_decides_from_its_canaries(tmp_path):
    import json
    import warnings

    from click.testing import CliRunner
    from conftest import synthetic_images, write_folder

    from labelclean import Cleaner, Dataset
    from labelclean.cli import main

    x, _, given, mask = synthetic_images(600, 3, 0.2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = Cleaner(model="mlp:64", probe_every=0, verdict="estimate").fit(
            Dataset.from_arrays(x, given), noise_mask=mask)
    est = res.estimate
    assert est is not None and est.canaries > 0 and est.learned
    assert res.history["est_precision"].notna().any()
    flags = res.scores.sort_values("index")["flagged"].to_numpy()
    if res.verdict.status == "flagged":
        true_precision = mask[flags].mean()
        assert est.precision.low - 0.1 <= true_precision <= est.precision.high + 0.1
    # labels drawn at random: fitted no better than the canaries' wrong ones
    rand = np.random.default_rng(0).integers(0, 3, len(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = Cleaner(model="mlp:64", probe_every=0, max_epochs=30, verdict="estimate").fit(
            Dataset.from_arrays(x, rand))
    assert res.verdict.withheld and res.n_flagged == 0
    # through the CLI, without canaries: no estimate, withheld (exit 3)
    root = tmp_path / "d"
    write_folder(root, x[:300], given[:300])
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["run", str(root), "--out", str(out), "--model", "mlp:64",
                                  "--probe-every", "0", "--epochs", "5", "--verdict",
                                  "estimate", "--canaries", "0"])
    assert r.exit_code == 3, r.output
    run = json.loads((out / "run.json").read_text())
    assert run["estimate"] is None and "canaries" in run["verdict"]["reason"]


def test_the_report_shows_the_estimate_escaped(tmp_path):
    import json
    import warnings

    from conftest import synthetic_images, write_folder

    from labelclean import Cleaner
    from labelclean.report import write_report

    x, _, given, _ = synthetic_images(300, 3, 0.2, seed=2)
    root = tmp_path / "d"
    write_folder(root, x, given)
    out = tmp_path / "o"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Cleaner(model="mlp:64", probe_every=0, max_epochs=12, canaries=0.1).fit(root).export(out)
    run = json.loads((out / "run.json").read_text())
    assert run["estimate"]["canaries"] == 30 and len(run["estimate"]["per_class"]) == 3
    page = (out / "report.html").read_text()
    assert "id=estimate-table" in page and "How likely the flags are right" in page
    # a class name from an untrusted run.json is escaped
    run["estimate"]["per_class"][0]["name"] = "<script>x</script>"
    (out / "run.json").write_text(json.dumps(run))
    (out / ".labelclean-run").unlink()
    write_report(out)
    page = (out / "report.html").read_text()
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_the_run_decides_by_its_point_estimate_and_never_empties_a_class():
    from labelclean.estimate import ClassEstimate, Estimate, Interval

    rng = np.random.default_rng(7)
    scores, _, canaries, y, _ = synthetic(4000, 0.3, 400, rng, k=2)

    def per_class(name, value):
        iv = Interval(value, value - 0.2, value + 0.2)
        return ClassEstimate(name, int((y == len(name) - 1).sum()), 100, 20, iv, iv, iv)

    def run(value, low):
        iv = Interval(value, low, value + 0.1)
        return Estimate(samples=4000, flagged=int((scores > 0).sum()), canaries=400,
                        precision=iv, recall=iv, noise_share=iv, residual_share=iv,
                        auc=0.9, auc_z=10.0, per_class=[per_class("a", 0.8),
                                                        per_class("bb", 0.3)])

    policy, decision = TcPolicy(), _decision(scores, canaries)
    # a lower end below MIN_PRECISION does not withhold a point estimate above it
    verdict, flags = policy.estimate_verdict(decision, y, ["a", "bb"], run(0.55, 0.45))
    assert verdict.status == "flagged" and flags.sum() == (scores > 0).sum()
    verdict, flags = policy.estimate_verdict(decision, y, ["a", "bb"], run(0.45, 0.35))
    assert verdict.status == "withheld" and not flags.any()
    # a class the flags would empty keeps its samples
    all_bb = scores.copy()
    all_bb[y == 1] = 5.0
    verdict, flags = policy.estimate_verdict(_decision(all_bb, canaries), y, ["a", "bb"],
                                             run(0.7, 0.6))
    assert verdict.classes_held == ["bb"] and not flags[y == 1].any() and flags[y == 0].any()


def test_per_class_estimates_use_every_canary():
    rng = np.random.default_rng(3)
    scores, wrong, canaries, y, _ = synthetic(4000, 0.3, 200, rng, k=4)
    # every canary carries class 0: classes 1-3 have none of their own
    est = estimate(scores, canaries, y, np.zeros(len(canaries), dtype=int),
                   ["a", "b", "c", "d"], reps=50)
    for i, c in enumerate(est.per_class):
        true_p = wrong[(y == i) & (scores > 0)].mean()
        assert c.canaries == (200 if i == 0 else 0)
        assert c.precision.low - 0.05 <= true_p <= c.precision.high + 0.05


def test_a_learnable_set_whose_first_epoch_is_at_chance_is_not_withheld():
    import warnings

    from conftest import class_templates

    from labelclean import Cleaner, Dataset

    # faint class patterns and a small step: the first epoch predicts unseen samples'
    # labels at chance (0.7's first-visit rule withheld this), yet the model learns them
    rng = np.random.default_rng(1)
    n, k = 1200, 3
    templates = class_templates(k, 1)
    y = rng.integers(0, k, n)
    x = (128 + (templates[y] - 0.5) * 20 + rng.normal(0, 40, (n, *templates.shape[1:])))
    x = x.clip(0, 255).astype(np.uint8)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, n // 5, replace=False)] = True
    given = y.copy()
    given[mask] = (y[mask] + rng.integers(1, k, mask.sum())) % k
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = Cleaner(model="mlp:64", probe_every=0, lr=0.001, max_epochs=40).fit(
            Dataset.from_arrays(x, given), noise_mask=mask)
    assert res.history["first_visit_z"].iloc[0] < 3  # at chance in the first epoch
    assert res.verdict.status == "flagged", res.verdict
    flags = res.scores.sort_values("index")["flagged"].to_numpy()
    true_precision = mask[flags].mean()
    assert true_precision > 0.8
    assert res.estimate.precision.low - 0.05 <= true_precision <= res.estimate.precision.high
