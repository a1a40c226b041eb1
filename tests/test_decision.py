"""decision.py's public names on small synthetic inputs: the phase-II peak search
(:class:`PhaseIIDetector`), the per-epoch policy and its rules-verdict
(:class:`TcPolicy`), and :class:`Verdict`."""

from __future__ import annotations

import numpy as np
import pytest

from labelclean.decision import PATIENCE_STEPS, PhaseIIDetector, TcPolicy, Verdict
from labelclean.mixture import LossMixture


def mixture(separation: float, bimodal: bool = True) -> LossMixture:
    """A mixture whose scores are all ``separation`` (Ashman's D, ``delta_L``)."""
    return LossMixture(m_c=0.1, s_c=0.1, m_w=0.1 + separation, s_w=0.1, r=0.2,
                       delta_L=separation, threshold=0.5, separation=separation,
                       bic_1=0.0, bic_2=-1.0, bimodal=bimodal)


# ---------------------------------------------------------------------- Verdict


def test_a_verdict_says_its_status_reason_and_whether_it_was_forced():
    v = Verdict("withheld", "too few steps", "train longer")
    assert v.withheld and str(v) == "withheld: too few steps"
    forced = Verdict("withheld", "too few steps", forced=True)
    assert str(forced) == "withheld: too few steps (flags forced)"
    assert not Verdict("flagged").withheld and str(Verdict("flagged")) == "flagged"
    d = Verdict("flagged", "3 samples", classes_held=["cat"]).to_dict()
    assert d == {"status": "flagged", "reason": "3 samples", "advice": "", "forced": False,
                 "classes_held": ["cat"], "text": "flagged: 3 samples"}


# ---------------------------------------------------------------------- PhaseIIDetector


def test_the_detector_refuses_an_unknown_score_or_no_patience():
    with pytest.raises(ValueError, match="unknown score"):
        PhaseIIDetector(score="accuracy")
    with pytest.raises(ValueError, match="patience"):
        PhaseIIDetector(patience=0)


def feed(detector: PhaseIIDetector, separations: list[float],
         train_losses: list[float] | None = None) -> list[bool]:
    losses = train_losses or [1.0 / (i + 1) for i in range(len(separations))]
    return [detector.update(epoch, loss, mixture(s))
            for epoch, (s, loss) in enumerate(zip(separations, losses), start=1)]


def test_the_detector_picks_the_peak_and_stops_after_patience_epochs():
    d = PhaseIIDetector(patience=2)
    best = feed(d, [1.0, 2.0, 3.0, 2.5])
    assert best == [True, True, True, False]
    assert d.best_epoch == 3 and d.best_score == 3.0 and not d.should_stop
    assert d.update(5, 0.1, mixture(2.0)) is False
    assert d.should_stop and d.since_best == 2 and d.best_epoch == 3


def test_an_unstable_epoch_is_never_the_peak():
    d = PhaseIIDetector(patience=5)
    # epoch 3's training loss is more than twice the lowest so far: a spike
    feed(d, [1.0, 2.0, 9.0, 2.5], train_losses=[1.0, 0.5, 1.5, 0.4])
    assert d.unstable_epochs == [3]
    assert d.best_epoch == 4 and d.best_score == 2.5


def test_waiting_for_noise_keeps_the_latest_epoch_provisional_and_never_stops():
    d = PhaseIIDetector(patience=1, wait_for_noise=True)
    for epoch in (1, 2, 3):
        assert d.update(epoch, 1.0, mixture(5.0, bimodal=False)) is True
        assert d.best_epoch == epoch and d.first_noisy_epoch is None
    assert not d.should_stop
    assert d.update(4, 1.0, mixture(1.0)) is True  # the search starts here
    assert d.first_noisy_epoch == 4 and d.best_score == 1.0
    assert d.update(5, 1.0, mixture(0.5)) is False and d.should_stop


def test_a_restored_detector_continues_as_the_original():
    a = PhaseIIDetector(patience=3)
    feed(a, [1.0, 3.0, 2.0])
    b = PhaseIIDetector(patience=3)
    b.load_state_dict(a.state_dict())
    for epoch, s in ((4, 2.5), (5, 4.0), (6, 1.0)):
        assert a.update(epoch, 0.1, mixture(s)) == b.update(epoch, 0.1, mixture(s))
    assert (a.best_epoch, a.best_score, a.since_best) == (b.best_epoch, b.best_score,
                                                          b.since_best) == (5, 4.0, 1)


# ---------------------------------------------------------------------- TcPolicy


def test_classes_learned_counts_the_classes_whose_label_is_the_plurality_prediction():
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 0, 0, 0])  # class 2's samples are predicted 0
    assert TcPolicy.classes_learned(pred, y, 3) == 2
    assert TcPolicy.classes_learned(y, y, 3) == 3
    # a class no sample is given counts as learned: nothing to learn
    assert TcPolicy.classes_learned(y, y, 4) == 4
    policy = TcPolicy()
    assert policy.learned(3, 3) and not policy.learned(2, 3)


def test_the_policy_refuses_an_unknown_suspicion():
    with pytest.raises(ValueError, match="unknown suspicion"):
        TcPolicy(suspicion="entropy")


def two_populations(n: int = 200, share: float = 0.2, seed: int = 0):
    """Losses of a set whose first ``share`` are wrong labels: low for the clean
    samples, high for the wrong ones."""
    rng = np.random.default_rng(seed)
    noisy = np.arange(n) < int(share * n)
    loss = np.where(noisy, rng.normal(3.0, 0.3, n), np.abs(rng.normal(0.1, 0.05, n)))
    margin = np.where(noisy, -2.0, 3.0) + rng.normal(0, 0.1, n)
    return loss, margin, noisy


def observe(policy: TcPolicy, epochs: int, seed: int = 0, start: int = 1):
    decisions = []
    for epoch in range(start, start + epochs):
        loss, margin, noisy = two_populations(seed=seed + epoch)
        decisions.append(policy.observe(epoch, 20, 0.5, loss, margin,
                                        classes_learned=2, num_classes=2))
    return decisions, noisy


def test_the_policy_flags_the_high_loss_population():
    policy = TcPolicy(suspicion="loss", window=1, min_steps=0)
    decisions, noisy = observe(policy, 3)
    last = decisions[-1]
    assert last.ready and last.noisy and last.mixture.bimodal
    np.testing.assert_array_equal(last.would_flag, noisy)
    assert policy.t_c == policy.best.epoch
    verdict, flags = policy.verdict(policy.best, np.zeros(200, int), ["a", "b"])
    assert verdict.status == "flagged" and verdict.reason.startswith("40 samples (20.0%)")
    np.testing.assert_array_equal(flags, noisy)


def test_the_aum_flags_the_samples_whose_mean_margin_is_negative():
    policy = TcPolicy(suspicion="aum", min_steps=0)
    decisions, noisy = observe(policy, 4)
    last = decisions[-1]
    assert last.cut == 0.0 and last.area_start == 1
    assert ((last.scores > 0) == noisy).all()
    np.testing.assert_array_equal(last.would_flag, noisy)


def test_patience_covers_the_patience_steps():
    policy = TcPolicy(suspicion="loss", window=1, patience=2, min_steps=0)
    observe(policy, 1)  # 20 steps an epoch
    assert policy.detector.patience == PATIENCE_STEPS // 20


def test_no_epoch_is_ready_before_min_steps():
    policy = TcPolicy(suspicion="loss", window=1, min_steps=50)
    decisions, _ = observe(policy, 3)  # 20, 40, 60 steps
    assert [d.ready for d in decisions] == [False, False, True]
    assert policy.ready_epochs == [3]


def test_the_rules_verdict_withholds_an_unlearned_model_unless_forced():
    policy = TcPolicy(suspicion="loss", window=1, min_steps=0)
    (decision,), noisy = observe(policy, 1)
    y = np.zeros(200, int)
    decision.classes_learned = 1
    verdict, flags = policy.verdict(decision, y, ["a", "b"])
    assert verdict.withheld and "had not learned the majority" in verdict.reason
    assert not flags.any() and not verdict.forced
    verdict, flags = policy.verdict(decision, y, ["a", "b"], force=True)
    assert verdict.withheld and verdict.forced
    np.testing.assert_array_equal(flags, noisy)


def test_no_held_out_evidence_in_the_first_epoch_withholds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    order = rng.permutation(400)
    learnable, random = (TcPolicy(suspicion="loss", window=1, min_steps=0) for _ in range(2))
    learnable.first_visits(y, y, order, steps=50)
    random.first_visits(rng.integers(0, 2, 400), y, order, steps=50)
    assert learnable.first_visit["accuracy"] == 1.0 and learnable.first_visit["z"] > 3
    assert abs(random.first_visit["z"]) < 3
    assert random.first_visit_record()["first_visit_steps"] == 50.0
    verdicts = []
    for policy in (learnable, random):
        (decision,), _ = observe(policy, 1)
        verdicts.append(policy.verdict(decision, np.zeros(200, int), ["a", "b"])[0])
    assert verdicts[0].status == "flagged"
    assert verdicts[1].withheld
    assert "no evidence that the labels can be learned" in verdicts[1].reason


def test_a_restored_policy_decides_as_the_uninterrupted_one():
    a = TcPolicy(suspicion="aum", min_steps=0)
    observe(a, 3)
    b = TcPolicy(suspicion="aum", min_steps=0)
    b.load_state_dict(a.state_dict())
    da, _ = observe(a, 2, start=4)
    db, _ = observe(b, 2, start=4)
    for x, y in zip(da, db):
        np.testing.assert_array_equal(x.scores, y.scores)
        assert (x.is_best, x.noisy, x.ready) == (y.is_best, y.noisy, y.ready)
    assert a.t_c == b.t_c and a.area_start == b.area_start
