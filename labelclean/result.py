"""What a fit returns (:class:`CleanResult`: the data of
:class:`~labelclean.resultdata.ResultData` plus the methods that export it) and how it
is put together at the end of a fit (:func:`assemble_result`): the history, the
end-of-fit observers, the model's outputs at ``t_c``, the verdict, the scores table,
the checkpoint's settings and the timings.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._version import __version__
from .dataset import Dataset
from .decision import EpochDecision, TcPolicy, suggested_labels
from .distributed import Dist
from .errors import WithheldWarning
from .estimate import estimate as estimate_flags
from .mixture import LossMixture
from .observers import HistoryContext, Observer, end_of_fit
from .resultdata import ResultData
from .settings import Settings
from .suspicions import Suspicion
from .training import SampleStats, TrainConfig, Trainer

log = logging.getLogger("labelclean")


class CleanResult(ResultData):
    """Everything one run found, as plain data (:class:`~labelclean.resultdata.ResultData`),
    and the methods that write it (:meth:`export`, :meth:`review_frame`).

    Attributes
    ----------
    dataset:
        The training data as read (``dataset.ids`` name the samples).
    history:
        One row per epoch: training loss and accuracy, validation accuracy
        (when a validation set was given), the mixture parameters ``m_c, s_c,
        m_w, s_w, r``, ``delta_L``, the threshold, the number of samples that
        would be flagged at that epoch, timings, the order parameters when
        probed, and the phase label: every column of every observer
        (:mod:`labelclean.observers`).
    scores:
        One row per training sample at ``t_c``: ``sample_id``, ``given_label``,
        ``predicted_label``, ``predicted_prob``, ``score`` (the loss averaged
        over the ``window`` epochs ending at ``t_c``, which the mixture and the
        threshold apply to), ``loss`` (at ``t_c``), ``margin``, ``p_noisy``,
        ``flagged``.
    t_c:
        The chosen epoch (1-based): the checkpoint's and the flags' epoch.
    mixture:
        The :class:`~labelclean.mixture.LossMixture` at ``t_c``.
    losses:
        ``(epochs, N)`` float32: every sample's loss after every epoch.
    margins:
        ``(epochs, N)`` float32: given-label logit minus the largest other logit.
    second_population:
        Whether a second (mislabelled) population was found at ``t_c``: the
        mixture's own bimodality test, or, with ``suspicion="aum"``, that of
        the AUM or of the window's mean loss. Nothing is flagged without it.
    verdict:
        The run's :class:`~labelclean.decision.Verdict`: ``"flagged"``, ``"no
        second population"`` or ``"withheld"`` (nothing flagged, with the
        reason, unless ``force_flags``).
    pred_probs:
        ``(N, K)`` float32 softmax probabilities of the model at ``t_c`` (eval
        mode), rows in sample order (``scores``' ``index``), columns in
        ``dataset.classes`` order: the ``pred_probs`` cleanlab's ``Datalab``
        and ``find_label_issues`` take (in-sample, not cross-validated).
    embeddings:
        ``(N, D)`` float32 penultimate features of the model at ``t_c``, rows
        as ``pred_probs`` (``features=`` for Datalab's outlier and near-duplicate
        checks); None with ``Cleaner(embeddings=False)``.
    held_out, canary_scores, canary_y:
        The samples held out for canaries (``(N,)`` bools; scored out of sample),
        and the canaries' suspicion scores at ``t_c`` and labels: what
        ``estimate`` was computed from (None without canaries).
    estimate:
        How likely the flags at ``t_c`` are right, from the run's canaries
        (:class:`~labelclean.estimate.Estimate`: precision, recall, the share of
        wrong labels, and what the kept samples still hold, with intervals,
        overall and per class); the verdict follows it. None without canaries.
    observed:
        The observers' run-level results, by name (their ``on_history``; also
        top-level keys of ``run.json``): ``phase_boundaries`` among them.
    """

    def review_frame(self) -> pd.DataFrame:
        """The table ``flagged_samples.csv`` holds: the flagged rows with ``path``
        (or ``row``), ``suggested_label`` and an editable ``action`` column
        (:func:`labelclean.export.review_table`). Written with ``to_csv(...,
        index=False)`` it is a review file ``labelclean apply`` reads (cells a
        spreadsheet would run as formulas are guarded only in the exported file)."""
        from .export import review_table

        return review_table(self)

    def export(
        self, out: str | os.PathLike, *, link: str = "copy", overwrite: bool = False
    ) -> Path:
        """Write the cleaned dataset, ``flagged_samples.csv`` and the rest under ``out``.

        See :func:`labelclean.export.export_result`.
        """
        from .export import export_result

        return export_result(self, out, link=link, overwrite=overwrite)


def assemble_result(
    settings: Settings,
    *,
    data: Dataset,
    val: Dataset | None,
    noise_mask: np.ndarray | None,
    trainer: Trainer,
    config: TrainConfig,
    dist: Dist,
    policy: TcPolicy,
    observers: dict[str, Observer],
    rows: list[dict[str, Any]],
    chosen: tuple[dict, SampleStats, EpochDecision],
    stop_reason: str,
    model: tuple[str, dict],
    started: float,
    observer_seconds: dict[str, float] | None = None,
) -> CleanResult:
    """The :class:`CleanResult` of a fit whose epochs are over (rank 0), with
    ``settings`` (the run's, :meth:`labelclean.Cleaner.settings`).

    ``rows`` are the epochs' history rows, ``chosen`` the weights, per-sample
    pass and decision of the epoch chosen as ``t_c``, ``model`` its name and
    how it prepares its inputs (``Classifier.input_config``), and ``started``
    the ``time.perf_counter()`` the run would have started at had it never
    been interrupted. Runs the observers'
    ``on_history`` (the phases, TensorBoard), loads the weights at ``t_c`` into
    ``trainer``'s model for one eval pass (``pred_probs``, embeddings), asks the
    policy for its verdict and warns when it is withheld.
    """
    weights, at_tc, decision_tc = chosen
    t_c = int(decision_tc.epoch)
    history = pd.DataFrame(rows)
    history["unstable"] = history["epoch"].isin(policy.detector.unstable_epochs)
    pred_probs, embeddings = _outputs_at(trainer, weights, settings.embeddings)
    observed = end_of_fit(observers, HistoryContext(
        history=history, t_c=t_c, decision=decision_tc, policy=policy, dataset=data,
        noise_mask=noise_mask))
    estimate = None
    if decision_tc.canary_scores is not None:
        inside = ~trainer.held_out  # the held-out samples are scored out of sample
        estimate = estimate_flags(decision_tc.scores[inside], decision_tc.canary_scores,
                                  data.y[inside], trainer.canary_y, list(data.classes),
                                  cut=decision_tc.cut, seed=settings.seed)
    if settings.verdict == "estimate":
        verdict, flags = policy.estimate_verdict(decision_tc, data.y, list(data.classes),
                                                 estimate, force=settings.force_flags)
    else:
        verdict, flags = policy.verdict(
            decision_tc, data.y, list(data.classes), force=settings.force_flags,
            suggested=suggested_labels(at_tc.pred, at_tc.runner_up, data.y),
            predicted=at_tc.pred)
    p_noisy = decision_tc.mixture.posterior(decision_tc.scores)
    scores = scores_frame(
        data, at_tc, decision_tc.scores, p_noisy, flags, decision_tc.mixture, t_c,
        kind=policy.suspicion, aum_start=policy.aum_start or 1,
    )
    if verdict.forced:
        f = scores["flagged"]
        scores.loc[f, "reason"] = "FORCED (run withheld): " + scores.loc[f, "reason"]
    if verdict.withheld:
        warnings.warn(f"labelclean: {verdict}. Try: {verdict.advice}.", WithheldWarning,
                      stacklevel=4)  # the caller of Cleaner.fit (fit -> _fit -> here)
    elapsed = time.perf_counter() - started
    log.info("t_c = epoch %d of %d trained (%s); %s: %d of %d samples flagged",
             t_c, len(rows), stop_reason, verdict, int(scores["flagged"].sum()), len(data))
    recorder = observers["samples"]  # the SampleRecorder: the result's per-sample arrays
    model_name, inputs = model
    return CleanResult(
        dataset=data,
        history=history,
        scores=scores,
        t_c=t_c,
        mixture=decision_tc.mixture,
        losses=np.stack(recorder.losses).astype(np.float32),
        margins=np.stack(recorder.margins).astype(np.float32),
        state_dict=weights,
        checkpoint_config={
            "model": model_name,
            "classes": list(data.classes),
            "input_shape": list(data.input_shape),
            "input_kind": data.kind,
            **inputs,  # mean, std, input_size, interpolation
            "class_order": data.class_order,
            "epoch": t_c,
            "labelclean_version": __version__,
            "inputs": "raw uint8 images (N, C, H, W) at input_shape, or float features",
        },
        params={**settings.as_dict(), "model": model_name, "device": str(trainer.device),
                "pretrained": settings.pretrained or settings.weights is not None,
                "model_input": inputs,
                "batch_size": config.batch_size, "lr": config.lr,
                "max_epochs": config.max_epochs, "augment": config.augment,
                # the recipe (models.default_recipe) the run trained with
                "recipe": {k: getattr(config, k) for k in
                           ("label_smoothing", "eval_flip", "nesterov", "ema")},
                **({"world_size": dist.world_size} if dist.enabled else {})},
        timing=run_timing(history, t_c, elapsed, observer_seconds),
        stop_reason=stop_reason,
        noise_mask=noise_mask,
        val=val,
        second_population=bool(decision_tc.noisy),
        verdict=verdict,
        pred_probs=pred_probs,
        embeddings=embeddings,
        observed=observed,
        estimate=estimate,
        held_out=trainer.held_out if estimate is not None else None,
        canary_scores=decision_tc.canary_scores,
        canary_y=trainer.canary_y,
    )


def run_timing(history: pd.DataFrame, t_c: int, elapsed: float,
               observer_seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """``run.json``'s ``timing``: where the run's time went. ``observe_share`` is
    observation over training time (the eval pass, the decision and every
    observer), ``observe_seconds_by_part`` splits it, and ``seconds_to_t_c`` is
    training plus observation up to and including epoch ``t_c``."""
    train = float(history["seconds_train"].sum())
    observe = float(history["seconds_observe"].sum())
    parts = {"eval_pass": float(history["seconds_eval"].sum()),
             "decision": float(history["seconds_decide"].sum())}
    parts.update({f"observer:{name}": float(sec)
                  for name, sec in sorted((observer_seconds or {}).items())})
    upto = history[history["epoch"] <= t_c]
    return {
        "total_seconds": elapsed,
        "train_seconds": train,
        "observe_seconds": observe,
        "observe_share": observe / train if train > 0 else float("nan"),
        "observe_seconds_by_part": parts,
        "seconds_to_t_c": float((upto["seconds_train"] + upto["seconds_observe"]).sum()),
        "epochs_trained": len(history),
        "steps_trained": int(history["steps"].sum()),
    }


def _outputs_at(
    trainer: Trainer, state: dict, embeddings: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(pred_probs, embeddings)`` of the model at ``t_c``: ``state`` is loaded
    into the trainer's model (training is over) for one eval pass."""
    trainer.load_weights(state)
    return trainer.outputs(embeddings=embeddings)


def scores_frame(
    data: Dataset, s: SampleStats, suspicion: np.ndarray, p_noisy: np.ndarray,
    flags: np.ndarray, mixture: LossMixture, t_c: int, kind: Suspicion,
    aum_start: int = 1,
) -> pd.DataFrame:
    """One row per sample at ``t_c``, flagged first, each flagged row with its ``reason``.

    ``model_agrees`` marks rows whose model at ``t_c`` predicts the given label.
    Such a row is flagged only by the AUM (its label was ranked below another
    class on average over training, then fitted late, as a memorised wrong
    label is); its ``suggested_label`` is the runner-up class, never the given
    label, so every flagged row names an alternative and says why.
    """
    classes = np.asarray(data.classes, dtype=object)
    agrees = s.pred == data.y
    suggested = suggested_labels(s.pred, s.runner_up, data.y)
    df = pd.DataFrame(
        {
            "sample_id": data.ids,
            "index": np.arange(len(data)),
            "given_label": classes[data.y],
            "predicted_label": classes[s.pred],
            "predicted_prob": s.pred_prob,
            "given_prob": s.given_prob,
            "suggested_label": classes[suggested],
            "model_agrees": agrees,
            "score": suspicion,
            "loss": s.loss,
            "margin": s.margin,
            "p_noisy": p_noisy,
            "flagged": flags,
        }
    )
    df = df.sort_values(["flagged", "score"], ascending=[False, False], kind="stable")
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    df["reason"] = ""
    f = df["flagged"].to_numpy()
    span = kind.span(t_c, aum_start)
    df.loc[f, "reason"] = [
        kind.reason(score, span, mixture.threshold) + (
            f"fitted late: at epoch {t_c} the model agrees with {given!r} (p={gp:.2f}), "
            f"runner-up {sug!r}; likely memorised"
            if agree else
            f"model says {pred!r} (p={prob:.2f}), label says {given!r} (p={gp:.3f})"
        )
        for score, pred, prob, given, gp, sug, agree in df.loc[
            f, ["score", "predicted_label", "predicted_prob", "given_label", "given_prob",
                "suggested_label", "model_agrees"]
        ].itertuples(index=False)
    ]
    return df.reset_index(drop=True)
