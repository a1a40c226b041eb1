"""The suspicion as a pluggable object (labelclean.suspicions): the built-ins' scores
against direct computations, and a toy suspicion registered from this file, with no
change to the package, that a run scores, flags by, writes to scores.csv and puts in
its report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import FAST, synthetic_images

from labelclean import Cleaner, Dataset, LabelcleanError
from labelclean.decision import TcPolicy, flag_cut, flag_samples, suspicion_scores
from labelclean.mixture import LossMixture
from labelclean.suspicions import (
    LOG_EPS,
    SUSPICIONS,
    AUMSuspicion,
    Measurements,
    Suspicion,
    create_suspicion,
    register_suspicion,
)


class NegMargin(Suspicion):
    """A toy: minus the margin of the epoch itself; flagged where it is negative."""

    name = "negmargin"
    uses = ("margins",)
    fixed_cut = 0.0

    def score(self, m: Measurements) -> np.ndarray:
        return -np.asarray(m.margin, dtype=np.float64)

    def quantity(self, epoch: str = "t_c", short: bool = False) -> str:
        return f"toy score (negated margin at epoch {epoch})"

    def flag_rule(self) -> str:
        return "flagged where the toy's margin is negative"


@pytest.fixture(scope="module")
def negmargin():
    register_suspicion(NegMargin)
    yield NegMargin
    SUSPICIONS.pop(NegMargin.name)  # the registry as the other test files expect it


def measurements(losses, margins, start=1):
    losses = [np.asarray(x, dtype=np.float64) for x in losses]
    margins = np.asarray(margins, dtype=np.float64)
    rows = margins[start - 1:]
    return Measurements(len(losses), losses[-1], margins[-1], losses, rows.sum(axis=0),
                        len(rows), start)


LOSSES = [[1.0, 0.2, 3.0], [2.0, 0.1, 5.0], [4.0, 0.0, 7.0]]
MARGINS = [[-1.0, 2.0, 0.5], [-3.0, 4.0, -0.5], [1.0, 6.0, -1.5]]


def test_the_builtins_are_registered_in_the_cli_order():
    assert tuple(SUSPICIONS) == ("loss", "logloss", "aum")
    assert all(SUSPICIONS[name].name == name for name in SUSPICIONS)


@pytest.mark.parametrize("window", [1, 2, 3])
def test_builtin_scores_match_direct_computations(window):
    m = measurements(LOSSES, MARGINS)
    mean = np.mean(np.asarray(LOSSES)[-window:], axis=0)
    assert np.array_equal(create_suspicion("loss", window).score(m), mean)
    assert np.array_equal(create_suspicion("logloss", window).score(m), np.log(mean + LOG_EPS))
    assert np.allclose(create_suspicion("aum", window).score(m), -np.mean(MARGINS, axis=0))
    later = measurements(LOSSES, MARGINS, start=2)  # the area from its start on
    assert np.allclose(create_suspicion("aum").score(later),
                       -np.mean(np.asarray(MARGINS)[1:], axis=0))
    # the module-level function is the same computation
    assert np.array_equal(suspicion_scores(LOSSES, MARGINS, "loss", window), mean)
    assert np.array_equal(suspicion_scores(LOSSES, MARGINS, "aum", window),
                          -np.mean(MARGINS, axis=0))


def test_builtin_replay_from_stored_arrays():
    losses, margins = np.asarray(LOSSES), np.asarray(MARGINS)
    loss2 = create_suspicion("loss", 2)
    assert np.array_equal(loss2.replay(losses, None, 2), np.mean(losses[:2], axis=0))
    assert np.array_equal(loss2.replay(losses, None, 3), np.mean(losses[1:3], axis=0))
    assert np.array_equal(create_suspicion("aum").replay(None, margins, 3, area_start=2),
                          -np.mean(margins[1:3], axis=0))


def mixture(threshold: float, bimodal: bool = True) -> LossMixture:
    return LossMixture(m_c=0.0, s_c=1.0, m_w=3.0, s_w=1.0, r=0.3, delta_L=3.0,
                       threshold=threshold, separation=3.0, bic_1=0.0, bic_2=-1.0,
                       bimodal=bimodal)


def test_builtin_flag_rules():
    scores = np.array([-0.5, 0.5, 1.5, 2.5])
    mix = mixture(threshold=1.0)
    for name in ("loss", "logloss"):
        s = create_suspicion(name)
        assert s.cut(mix) == 1.0 == flag_cut(mix, name)
        assert s.flags(mix, scores, True).tolist() == [False, False, True, True]
        assert not s.flags(mix, scores, False).any()
    aum = create_suspicion("aum")
    assert aum.cut(mix) == 0.0 == flag_cut(mix, "aum")
    assert aum.flags(mix, scores, True).tolist() == [False, True, True, True]
    flags, _ = flag_samples(mix, scores, "aum", noisy=True)
    assert flags.tolist() == [False, True, True, True]
    assert aum.doubt(np.array([1.0, 1.0, -1.0])) is not None  # AUM < 0 for most
    assert aum.doubt(np.array([1.0, -1.0, -1.0])) is None
    assert create_suspicion("loss").doubt(np.ones(3)) is None


def policy_run(suspicion, epochs=6, n=200, seed=0):
    """Feed a policy synthetic epochs; return it and each epoch's decision and inputs."""
    rng = np.random.default_rng(seed)
    wrong = np.arange(n) < n // 4
    policy = TcPolicy(suspicion=suspicion, window=2, min_steps=0, patience_steps=0)
    out = []
    for epoch in range(1, epochs + 1):
        loss = np.where(wrong, 3.0, 0.1) + rng.normal(0, 0.05, n) ** 2
        margin = np.where(wrong, -2.0, 3.0) + rng.normal(0, 0.3, n)
        d = policy.observe(epoch, 10, train_loss=float(loss.mean()), loss=loss, margin=margin,
                           classes_learned=2, num_classes=2)
        out.append((d, loss, margin))
    return policy, out


@pytest.mark.parametrize("name", ["loss", "logloss", "aum"])
def test_the_policy_scores_and_flags_by_its_suspicion(name):
    policy, out = policy_run(name)
    assert isinstance(policy.suspicion, SUSPICIONS[name])
    losses = np.stack([o[1] for o in out])
    margins = np.stack([o[2] for o in out])
    for t, (d, _, _) in enumerate(out, start=1):
        if name == "aum":
            expected = -np.mean(margins[:t], axis=0)
        else:
            expected = np.mean(losses[max(0, t - 2):t], axis=0)
            expected = np.log(expected + LOG_EPS) if name == "logloss" else expected
        assert np.allclose(d.scores, expected)
        assert d.cut == policy.suspicion.cut(d.mixture)
        assert np.array_equal(d.would_flag, d.noisy & (d.scores > d.cut))
    assert out[-1][0].would_flag[: 50].all() and not out[-1][0].would_flag[50:].any()


def test_the_suspicions_state_resumes_with_the_policy():
    policy, _ = policy_run("aum", epochs=3)
    state = policy.state_dict()
    assert state["suspicion"] == {"fallback": policy.suspicion.fallback,
                                  "established": policy.suspicion.established}
    again = TcPolicy(suspicion="aum")
    again.load_state_dict(state)
    assert again.suspicion.state_dict() == policy.suspicion.state_dict()
    legacy = {k: v for k, v in state.items() if k != "suspicion"}  # saved before the object
    legacy.update(_fallback=True, _established=True)
    again.load_state_dict(legacy)
    assert again.suspicion.fallback and again.suspicion.established
    assert isinstance(again.suspicion, AUMSuspicion)


def test_registry_refuses_a_taken_or_missing_name():
    class Other(Suspicion):
        name = "aum"

    with pytest.raises(ValueError, match="already registered"):
        register_suspicion(Other)
    with pytest.raises(ValueError, match="unknown suspicion"):
        create_suspicion("nope")
    with pytest.raises(LabelcleanError, match="suspicion must be one of"):
        Cleaner(suspicion="nope").validate()


def test_a_toy_suspicion_from_a_test_file_runs_end_to_end(negmargin, tmp_path):
    Cleaner(suspicion="negmargin").validate()  # the check reads the registry as it is now
    policy, out = policy_run("negmargin")
    for d, _, margin in out:
        assert np.array_equal(d.scores, -margin) and d.cut == 0.0
        assert np.array_equal(d.would_flag, d.noisy & (margin < 0))

    x, _, given, mask = synthetic_images(360, 3, 0.2, seed=1)
    res = Cleaner(**{**FAST, "suspicion": "negmargin"}).fit(Dataset.from_arrays(x, given),
                                                             noise_mask=mask)
    assert res.params["suspicion"] == "negmargin"
    s = res.scores.sort_values("index")
    score = s["score"].to_numpy()
    assert np.allclose(score, -s["margin"].to_numpy(), atol=1e-6)  # scored by the toy
    flagged = s["flagged"].to_numpy()
    assert not (flagged & (score <= 0)).any()  # flagged only by its rule
    assert res.verdict.status == "flagged" and res.n_flagged > 0  # 20% wrong labels
    if not res.verdict.classes_held:
        assert np.array_equal(flagged, score > 0)
    assert (s.loc[s["flagged"], "reason"].str.startswith("negmargin score ")).all()

    out_dir = res.export(tmp_path / "out")
    csv = pd.read_csv(out_dir / "scores.csv").sort_values("index")
    assert np.allclose(csv["score"], score, atol=1e-3)
    assert json.loads((out_dir / "run.json").read_text())["params"]["suspicion"] == "negmargin"
    html = (out_dir / "report.html").read_text()
    assert "negmargin" in html
    assert "toy score (negated margin at epoch t_c)" in html
    assert "flagged where the toy&#x27;s margin is negative" in html or \
        "flagged where the toy's margin is negative" in html
