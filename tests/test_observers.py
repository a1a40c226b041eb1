"""The observer seam: a measurement added through the registry reaches the history,
its state survives a resume, and an end-of-fit observer's results reach the result and
run.json."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_images

from labelclean import Cleaner, Dataset, LabelcleanError
from labelclean.export import export_result
from labelclean.observers import (
    MIXTURE_COLUMNS,
    REGISTRY,
    EpochContext,
    HistoryContext,
    Observer,
    ObserverSetup,
    end_of_epoch,
    end_of_fit,
    register,
    unregister,
)
from labelclean.resume import load_state

# verdict="rules": these runs are about the observers, and five epochs of a small set
# give the estimate too little to decide on
FAST = dict(model="mlp:16", max_epochs=5, patience=10, lr=0.02, batch_size=32,
            probe_every=0, min_steps=10, patience_steps=0, progress=False, verdict="rules")
TIMINGS = ["seconds_train", "seconds_eval", "seconds_decide", "seconds_observers",
           "seconds_observe"]


class Boom(RuntimeError):
    """Stands for a crash in the middle of a run."""


class RunningLoss(Observer):
    """Stateful on purpose: the number of epochs it has seen and the running sum of
    their mean eval losses. Without its state a resumed run would count from 1 again."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.seen = 0
        self.loss_sum = 0.0
        self.started_at: int | None = None
        self.calls = 0

    def on_fit_start(self, trainer: Any) -> None:
        self.started_at = trainer.epoch

    def on_epoch_end(self, context: EpochContext) -> dict[str, Any]:
        if context.epoch == self.crash_at:
            raise Boom(f"killed at epoch {context.epoch}")
        self.calls += 1
        self.seen += 1
        self.loss_sum += float(context.samples.loss.mean())
        return {"seen": self.seen, "loss_sum": self.loss_sum}

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "loss_sum": self.loss_sum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])
        self.loss_sum = float(state["loss_sum"])


@pytest.fixture(scope="module")
def data() -> Dataset:
    x, _, given, mask = synthetic_images(120, 3, 0.2, seed=5)
    return Dataset.from_arrays(x, given, noise_mask=mask)


@pytest.fixture
def running():
    """Registers ``RunningLoss`` as "running_loss" for one test; yields the list of
    the observers its factory made (one per fit) and a dict to set ``crash_at``."""
    made: list[RunningLoss] = []
    options: dict[str, Any] = {"crash_at": None}

    def factory(setup: ObserverSetup) -> RunningLoss:
        made.append(RunningLoss(options["crash_at"]))
        return made[-1]

    register("running_loss", factory)
    yield made, options
    unregister("running_loss")
    assert "running_loss" not in REGISTRY


def test_a_registered_observer_adds_its_columns_to_the_history(data, running):
    made, _ = running
    result = Cleaner(**FAST).fit(data)
    history = result.history
    epochs = len(history)
    assert list(history["seen"]) == list(range(1, epochs + 1))
    np.testing.assert_allclose(history["loss_sum"], history["eval_loss"].cumsum())
    # after the default observers' columns (the truth metrics), before the timings
    columns = list(history.columns)
    assert columns.index("true_f1") < columns.index("seen") < columns.index("loss_sum")
    assert columns.index("loss_sum") + 1 == columns.index("seconds_train")
    assert len(made) == 1 and made[0].started_at == 0 and made[0].calls == epochs


def test_without_it_the_history_has_no_such_column(data):
    assert "seen" not in Cleaner(**FAST).fit(data).history


def test_an_observers_state_survives_a_resume(data, running, tmp_path):
    made, options = running
    whole = Cleaner(**FAST).fit(data)
    assert len(whole.history) == FAST["max_epochs"]  # the crash below lands mid-run

    state = tmp_path / "state"
    options["crash_at"] = 3
    with pytest.raises(Boom):
        Cleaner(**FAST).fit(data, state_dir=state)
    saved = load_state(state)
    assert saved["epoch"] == 2
    assert saved["observers"]["running_loss"]["seen"] == 2

    options["crash_at"] = None
    resumed = Cleaner(**FAST).fit(data, state_dir=state, resume=True)
    # it continued after epoch 2 with the counts it had, not from zero
    assert made[-1].started_at == 2 and made[-1].calls == FAST["max_epochs"] - 2
    pd.testing.assert_frame_equal(resumed.history.drop(columns=TIMINGS),
                                  whole.history.drop(columns=TIMINGS), check_exact=True)
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    np.testing.assert_array_equal(resumed.margins, whole.margins)
    assert resumed.t_c == whole.t_c
    pd.testing.assert_frame_equal(resumed.scores, whole.scores)


def test_a_stateful_observer_the_saved_run_lacked_is_refused(data, tmp_path):
    state = tmp_path / "state"
    Cleaner(**FAST).fit(data, state_dir=state)
    register("running_loss", lambda setup: RunningLoss())
    try:
        with pytest.raises(LabelcleanError, match="saved without the observer 'running_loss'"):
            Cleaner(**FAST).fit(data, state_dir=state, resume=True)
    finally:
        unregister("running_loss")


def test_a_factory_returning_none_keeps_its_observer_out(data):
    calls: list[ObserverSetup] = []

    def factory(setup: ObserverSetup) -> None:
        calls.append(setup)
        return None

    register("absent", factory)
    try:
        result = Cleaner(**FAST).fit(data)
    finally:
        unregister("absent")
    [setup] = calls
    assert setup.dataset is result.dataset and setup.config.max_epochs == FAST["max_epochs"]
    assert setup.settings.model == FAST["model"] and setup.state_dir is None


def test_a_taken_name_is_refused_unless_replaced():
    factory = REGISTRY["truth"]
    with pytest.raises(ValueError, match="already registered"):
        register("truth", lambda setup: None)
    assert REGISTRY["truth"] is factory
    names = list(REGISTRY)
    register("truth", factory, replace=True)
    assert list(REGISTRY) == names  # replacing keeps its place, hence its columns' order


class Clash(Observer):
    def on_epoch_end(self, context: EpochContext) -> dict[str, Any]:
        return {"eval_loss": 0.0}


def test_a_column_already_in_the_row_is_refused():
    context = EpochContext(epoch=1, stats=None, samples=None, val=None, decision=None,
                           policy=None, trainer=None, dataset=None, noise_mask=None,
                           row={"epoch": 1, "eval_loss": 0.5})
    with pytest.raises(ValueError, match="'clash' returned columns already .*eval_loss"):
        end_of_epoch({"clash": Clash()}, context)
    assert context.row["eval_loss"] == 0.5


# ----------------------------------------------------------------------- end of the fit


class LateEpochs(Observer):
    """A run-level measurement: how many epochs came after t_c, plus a per-epoch
    column marking them; it records what it was shown."""

    def __init__(self) -> None:
        self.seen: list[HistoryContext] = []

    def on_history(self, context: HistoryContext) -> dict[str, Any]:
        self.seen.append(context)
        context.history["after_t_c"] = context.history["epoch"] > context.t_c
        return {"epochs_after_t_c": int(context.history["after_t_c"].sum())}


@pytest.fixture
def late():
    made: list[LateEpochs] = []

    def factory(setup: ObserverSetup) -> LateEpochs:
        made.append(LateEpochs())
        return made[-1]

    register("late_epochs", factory)
    yield made
    unregister("late_epochs")


def test_an_end_of_fit_observers_results_land_in_the_result_and_run_json(data, late, tmp_path):
    result = Cleaner(**FAST).fit(data)
    [observer] = late
    [context] = observer.seen  # once, after the last epoch
    epochs = len(result.history)
    assert context.t_c == result.t_c and len(context.history) == epochs
    assert context.decision.epoch == result.t_c
    after = epochs - result.t_c
    assert result.observed["epochs_after_t_c"] == after
    # its column joins the history, after every per-epoch column and the phase
    assert list(result.history["after_t_c"]) == [e > result.t_c for e in range(1, epochs + 1)]
    assert list(result.history.columns)[-2:] == ["phase", "after_t_c"]

    run = json.loads((export_result(result, tmp_path / "run", report=False) / "run.json")
                     .read_text())
    assert run["epochs_after_t_c"] == after
    keys = list(run)
    # run-level results sit together after the mixture, in registry order
    assert keys.index("mixture_at_t_c") + 1 == keys.index("phase_boundaries")
    assert keys.index("phase_boundaries") + 1 == keys.index("epochs_after_t_c")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(metrics["after_t_c"]) == list(result.history["after_t_c"])


@pytest.fixture(scope="module")
def plain(data):
    """A fit with the default observers only."""
    return Cleaner(**FAST).fit(data)


def test_the_default_end_of_fit_observers_give_the_phases(plain):
    result = plain
    assert set(result.observed) == {"phase_boundaries"}
    assert result.phase_boundaries is result.observed["phase_boundaries"]
    assert result.history["phase"].map(type).eq(str).all()
    for name, (first, last) in result.phase_boundaries.items():
        epochs = result.history.loc[result.history["phase"] == name, "epoch"]
        assert (first, last) == (epochs.min(), epochs.max())


def test_the_mixture_columns_follow_the_loops_and_match_the_mixture_at_t_c(plain):
    result = plain
    columns = list(result.history.columns)
    at = columns.index("m_c")
    assert columns[at:at + len(MIXTURE_COLUMNS)] == list(MIXTURE_COLUMNS)
    assert columns[at - 1] == "ready" and columns[at + len(MIXTURE_COLUMNS)] == "true_precision"
    row = result.history[result.history["epoch"] == result.t_c].iloc[0]
    assert row["m_c"] == result.mixture.m_c and row["threshold"] == result.mixture.threshold
    assert row["n_flagged"] == result.n_flagged


def _history_context(history: pd.DataFrame) -> HistoryContext:
    return HistoryContext(history=history, t_c=1, decision=None, policy=None, dataset=None,
                          noise_mask=None)


class Rewrites(Observer):
    def on_history(self, context: HistoryContext) -> dict[str, Any]:
        context.history["eval_loss"] = 0.0
        return {}


class Says(Observer):
    def __init__(self, **results: Any) -> None:
        self.results = results

    def on_history(self, context: HistoryContext) -> dict[str, Any]:
        return dict(self.results)


def test_an_end_of_fit_observer_may_not_change_the_history_it_was_given():
    history = pd.DataFrame({"epoch": [1, 2], "eval_loss": [0.5, 0.4]})
    with pytest.raises(ValueError, match="'rewrites' changed history columns"):
        end_of_fit({"rewrites": Rewrites()}, _history_context(history))


def test_a_result_two_end_of_fit_observers_return_is_refused():
    history = pd.DataFrame({"epoch": [1, 2]})
    assert end_of_fit({"a": Says(x=1), "b": Says(y=2)}, _history_context(history)) == \
        {"x": 1, "y": 2}
    with pytest.raises(ValueError, match="'b' returned results another observer .*: x"):
        end_of_fit({"a": Says(x=1), "b": Says(x=2)}, _history_context(history))


def test_a_result_named_like_a_run_json_key_is_refused_at_export(data, tmp_path):
    register("says", lambda setup: Says(t_c=0))
    try:
        result = Cleaner(**FAST).fit(data)
    finally:
        unregister("says")
    assert result.observed["t_c"] == 0 and result.t_c != 0  # the result's own t_c stands
    with pytest.raises(ValueError, match="overwrite run.json's own keys: t_c"):
        export_result(result, tmp_path / "run", report=False)
