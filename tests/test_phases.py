"""Phase labelling on synthetic histories with known phases (paper sections 3 and 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelclean.phases import (
    CLEAN_PHASES,
    NOISY_PHASES,
    UNKNOWN,
    PhaseThresholds,
    label_phases,
    phase_boundaries,
    phase_table,
)

# Known phases of the synthetic noisy run: epochs 1-5 I, 6-20 II, 21-28 III, 29-40 IV.
NOISY_TRUTH = ["I"] * 5 + ["II"] * 15 + ["III"] * 8 + ["IV"] * 12


def noisy_history(seed: int = 0, noise: float = 0.1) -> pd.DataFrame:
    """Order parameters shaped like figure 4: I: A_0c >> A_0w; II: balanced, R_cw ~ -0.9;
    III: R_cw > 0; IV: R_cw < 0 with the activity A fallen. Multiplicative noise on all."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, phase in enumerate(NOISY_TRUTH):
        epoch = i + 1
        if phase == "I":
            a0c, a0w, rcw, a, mw = 1.0, 0.02 + 0.03 * i, -0.3, 1.0 + 0.2 * i, 2.3 + 0.5 * i
        elif phase == "II":
            a0c, a0w, rcw, a, mw = 0.5, 0.4, -0.9, 2.5, 4.5
        elif phase == "III":
            a0c, a0w, rcw, a, mw = 0.4, 0.35, 0.4, 3.0, 4.5 * 0.75 ** (epoch - 20)
        else:
            a0c, a0w, rcw, a, mw = 0.05, 0.04, -0.2, 0.5, 0.1
        jitter = np.exp(noise * rng.normal(size=4))
        rows.append(
            {
                "epoch": epoch,
                "A": a * jitter[0],
                "A_0c": a0c * jitter[1],
                "A_0w": a0w * jitter[2],
                "R_cw": float(np.clip(rcw + noise * rng.normal(), -1, 1)),
                "A_0": 0.1 * jitter[3],
                "m_c": 0.3,
                "m_w": mw,
                "delta_L": mw - 0.3,
                "train_loss": 1.0,
                "train_accuracy": 0.5,
            }
        )
    return pd.DataFrame(rows)


def clean_history(seed: int = 0) -> pd.DataFrame:
    """Figure 1: fast learning (R ~ 0.4, sigma_lambda^2 ~ 1, large A) for epochs 1-8,
    exploration (R ~ 0, sigma_lambda^2 >> 1, small A) for epochs 9-25."""
    rng = np.random.default_rng(seed)
    rows = []
    for epoch in range(1, 26):
        fast = epoch <= 8
        j = np.exp(0.1 * rng.normal(size=3))
        rows.append(
            {
                "epoch": epoch,
                "R": (0.4 if fast else 0.01) * j[0],
                "sigma_lambda2": (1.0 if fast else 60.0) * j[1],
                "A": (1.0 if fast else 0.1) * j[2],
                "train_accuracy": 0.9 if fast else 1.0,
            }
        )
    return pd.DataFrame(rows)


def is_monotone(labels: pd.Series, names: tuple[str, ...]) -> bool:
    idx = [names.index(v) for v in labels if v != UNKNOWN]
    return all(a <= b for a, b in zip(idx[:-1], idx[1:], strict=True))


@pytest.mark.parametrize("seed", range(5))
def test_noisy_phases_are_recovered(seed):
    """Section 4 (eqs 13-15): phases I-IV from A_0c/A_0w, R_cw and A are labelled exactly."""
    h = noisy_history(seed)
    labels = label_phases(h, noisy=True)
    assert list(labels) == NOISY_TRUTH
    assert labels.index.equals(h.index)
    assert phase_boundaries(labels, h["epoch"]) == {
        "I": (1, 5),
        "II": (6, 20),
        "III": (21, 28),
        "IV": (29, 40),
    }


def test_noisy_phases_robust_to_single_noisy_epochs():
    """Section 4: single wild epochs (R_cw > 0 or A_0w ~ 0 in II, R_cw < 0 in III): no change."""
    h = noisy_history(1)
    h.loc[h.epoch == 12, "R_cw"] = 0.8
    h.loc[h.epoch == 16, "A_0w"] = -0.01
    h.loc[h.epoch == 24, "R_cw"] = -0.95
    h.loc[h.epoch == 33, "R_cw"] = 0.9
    labels = label_phases(h, noisy=True)
    assert list(labels) == NOISY_TRUTH
    assert is_monotone(labels, NOISY_PHASES)


def test_phases_never_go_back():
    """Section 4: even a sustained relapse (II-like epochs inside IV) leaves the labels monotone."""
    h = noisy_history(2)
    relapse = h.epoch.between(33, 35)
    h.loc[relapse, ["A", "A_0c", "A_0w", "R_cw"]] = [2.5, 0.5, 0.4, -0.9]
    labels = label_phases(h, noisy=True)
    assert is_monotone(labels, NOISY_PHASES)
    assert labels.iloc[-1] == "IV"


def test_row_order_does_not_matter():
    """Labels follow the epoch column, and stay aligned with the history's own index."""
    h = noisy_history(3)
    shuffled = h.sample(frac=1.0, random_state=0)
    labels = label_phases(shuffled, noisy=True)
    assert labels.index.equals(shuffled.index)
    assert list(labels.loc[h.index]) == NOISY_TRUTH
    duplicated = shuffled.set_axis([0] * len(shuffled))  # index labels need not be unique
    again = label_phases(duplicated, noisy=True)
    assert list(again) == list(labels)


def test_unprobed_epochs_are_filled_by_monotonicity_or_m_w():
    """Section 4: probes every 3rd epoch; between probes the m_w trend places the transitions."""
    h = noisy_history(4)
    unprobed = h.epoch % 3 != 1
    h.loc[unprobed, ["A", "A_0", "A_0c", "A_0w", "R_cw"]] = np.nan
    table = phase_table(h, noisy=True)
    assert set(table.loc[unprobed, "evidence"]) == {"m_w trend"}
    labels = table["phase"]
    assert is_monotone(labels, NOISY_PHASES)
    agree = np.mean(labels.to_numpy() == np.array(NOISY_TRUTH))
    assert agree >= 0.9
    # Probed epochs are labelled correctly.
    probed = ~unprobed.to_numpy()
    assert list(labels[probed]) == list(np.array(NOISY_TRUTH)[probed])


def test_unknown_where_there_is_no_evidence():
    """Missing everything: 'unknown', except where monotonicity forces the phase."""
    h = noisy_history(0)
    h["m_w"] = np.nan
    h.loc[h.epoch.between(14, 16), ["A_0c", "A_0w", "R_cw", "A"]] = np.nan  # inside II: forced
    h.loc[h.epoch.between(19, 23), ["A_0c", "A_0w", "R_cw", "A"]] = np.nan  # II|III: not forced
    labels = label_phases(h, noisy=True)
    assert set(labels[h.epoch.between(14, 16)]) == {"II"}
    assert set(labels[h.epoch.between(19, 23)]) == {UNKNOWN}
    assert is_monotone(labels, NOISY_PHASES)
    empty = h.copy()
    empty[["A_0c", "A_0w", "R_cw", "A"]] = np.nan
    assert set(label_phases(empty, noisy=True)) == {UNKNOWN}
    assert phase_boundaries(label_phases(empty, noisy=True), empty.epoch) == {}


def test_m_w_fallback_without_order_parameters():
    """Section 4/5 fallback: with no probes at all, m_w rising / flat / falling / ~0 gives I-IV."""
    h = noisy_history(0, noise=0.02)[["epoch", "m_w", "m_c", "delta_L", "train_accuracy"]]
    table = phase_table(h, noisy=True)
    assert set(table["evidence"]) == {"m_w trend"}
    labels = table["phase"]
    assert is_monotone(labels, NOISY_PHASES)
    assert np.mean(labels.to_numpy() == np.array(NOISY_TRUTH)) >= 0.85
    assert labels.iloc[0] == "I" and labels.iloc[-1] == "IV"


@pytest.mark.parametrize("seed", range(3))
def test_clean_phases(seed):
    """Section 3: fast learning (R finite, sigma_lambda^2 ~ 1, large A) then exploration."""
    h = clean_history(seed)
    h.loc[h.epoch == 4, "R"] = 0.0  # one noisy epoch
    h.loc[h.epoch == 4, "sigma_lambda2"] = 80.0
    labels = label_phases(h, noisy=False)
    assert set(labels) <= set(CLEAN_PHASES)
    assert list(labels) == ["fast learning"] * 8 + ["exploration"] * 17
    assert phase_boundaries(labels, h.epoch) == {"fast learning": (1, 8), "exploration": (9, 25)}


def test_clean_fallback_uses_train_accuracy():
    """Section 3: with no order parameters, exploration starts when the training error is ~0."""
    h = clean_history(0)[["epoch", "train_accuracy"]]
    labels = label_phases(h, noisy=False)
    assert list(labels) == ["fast learning"] * 8 + ["exploration"] * 17


def test_thresholds_are_configurable_and_edge_cases():
    """The numbers of docs/phases.md are PhaseThresholds fields; empty input is fine."""
    h = noisy_history(0)
    strict = PhaseThresholds(balance_ratio=1.0)  # II needs A_0c < A_0w: never here
    labels = label_phases(h, noisy=True, thresholds=strict)
    assert "II" not in set(labels)
    assert len(label_phases(h.iloc[:0], noisy=True)) == 0
    with pytest.raises(ValueError):
        phase_boundaries(pd.Series(["I", "II"]), [1])
