"""report.html and its figures, built from real (tiny) runs."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from report_runs import Runs, SuspicionRuns, big_report, build_runs, suspicion_runs, write_fake_run

from labelclean.cli import main
from labelclean.decision import suspicion_scores
from labelclean.errors import LabelcleanError
from labelclean.report import (
    FIGURES,
    FIGURES_DIR,
    REPORT_FILE,
    fig_loss_evolution,
    fig_loss_histogram,
    fig_separation,
    histogram_data,
    load_run,
    make_thumbnails,
    register,
    scores_at_t_c,
    suspicion_history,
    write_report,
)
from labelclean.report.plotting import new_figure
from labelclean.rundir import MARKER, read_marker

CORE_FIGURES = ("accuracy", "separation", "loss_evolution", "loss_histogram")


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    return build_runs(tmp_path_factory.getbasetemp() / "labelclean_runs")


@pytest.fixture(scope="session")
def other_runs(tmp_path_factory) -> SuspicionRuns:
    return suspicion_runs(tmp_path_factory.getbasetemp() / "labelclean_runs")


class _Summary(HTMLParser):
    """Collects ``data-key`` -> ``data-value`` of the summary table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-key" in a:
            self.values[a["data-key"]] = a["data-value"]


def summary_values(page: str) -> dict[str, str]:
    parser = _Summary()
    parser.feed(page)
    return parser.values


def gallery(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="gallery-data">(.*?)</script>', page, re.S)
    assert m, "no gallery data in the page"
    return json.loads(m.group(1))


def read(run: Path) -> tuple[str, dict]:
    return (run / REPORT_FILE).read_text(encoding="utf-8"), json.loads(
        (run / "run.json").read_text()
    )


def copy_run(run: Path, dest: Path) -> Path:
    # Without its marker: the tests edit the copy's files by hand, which a run
    # folder with a manifest would rightly refuse (issue 14; test_reliability.py).
    shutil.copytree(run, dest, symlinks=True, ignore=shutil.ignore_patterns(MARKER))
    return dest


@pytest.mark.parametrize("which", ["folder_run", "csv_run", "features_run"])
def test_summary_numbers_match_run_json(runs, which):
    page, run = read(getattr(runs, which))
    values = summary_values(page)
    assert int(values["samples"]) == run["samples"]
    assert int(values["flagged"]) == run["flagged"]
    assert float(values["estimated_noise_rate"]) == pytest.approx(run["estimated_noise_rate"])
    assert int(values["t_c"]) == run["t_c"]
    assert values["model"] == run["params"]["model"]
    assert float(values["total_seconds"]) == pytest.approx(run["timing"]["total_seconds"])
    if run["phase_boundaries"]:
        assert json.loads(values["phase_boundaries"]) == run["phase_boundaries"]
    # Shown to the reader too, not only in attributes.
    assert f"{run['samples']:,}" in page and f"{100 * run['estimated_noise_rate']:.2f}%" in page


@pytest.mark.parametrize("which", ["folder_run", "csv_run"])
def test_every_flagged_image_is_in_the_gallery_with_a_thumbnail(runs, which):
    run_dir = getattr(runs, which)
    page, _ = read(run_dir)
    data = gallery(page)
    flagged = pd.read_csv(run_dir / "flagged_samples.csv", dtype=str, keep_default_na=False)
    fields = data["fields"]
    items = [dict(zip(fields, item, strict=True)) for item in data["items"]]
    assert data["kind"] == "images"
    assert [i["id"] for i in items] == list(flagged["path"])  # same order: most suspicious first
    assert [i["rank"] for i in items] == sorted(i["rank"] for i in items)
    for item, (_, row) in zip(items, flagged.iterrows(), strict=True):
        # the card's class after the arrow is the suggested label: the prediction, or the
        # runner-up for a row the model fitted late (model_agrees)
        assert item["given"] == row["given_label"] and item["predicted"] == row["suggested_label"]
        assert item["predicted"] != item["given"]
        assert base64.b64decode(item["thumb"]).startswith(b"\x89PNG")
        assert item["href"].startswith("file://")


def test_features_run_gets_a_table_not_thumbnails(runs):
    page, run = read(runs.features_run)
    data = gallery(page)
    assert data["kind"] == "features"
    assert len(data["items"]) == run["flagged"]
    assert all(item[7] is None for item in data["items"])
    assert 'id=gallery-table' in page
    assert {item[1] for item in data["items"]} == set(
        pd.read_csv(runs.features_run / "flagged_samples.csv")["row"]
    )


def test_figures_are_written_and_embedded(runs):
    page, _ = read(runs.folder_run)
    for name in CORE_FIGURES:
        png = runs.folder_run / FIGURES_DIR / f"{name}.png"
        assert png.read_bytes().startswith(b"\x89PNG"), name
        assert f'id="fig-{name}"' in page
        # The embedded copy is the file's bytes.
        m = re.search(rf'id="fig-{name}"><img alt="{name}" src="data:image/png;base64,([^"]+)"',
                      page)
        assert m and base64.b64decode(m.group(1)) == png.read_bytes()
    assert "could not be drawn" not in page


def test_a_registered_figure_is_drawn_captioned_and_recorded(runs, tmp_path):
    # Adding a figure is one function and one registration: nothing else to edit.
    run_dir = tmp_path / "run"
    shutil.copytree(runs.folder_run, run_dir, symlinks=True)  # with its manifest
    drawn = []

    def fig_probe(run):
        drawn.append("probe")
        fig, (ax,) = new_figure(1)
        ax.plot(run.metrics["epoch"], run.metrics["m_c"])
        return fig

    def fig_absent(run):
        drawn.append("absent")

    try:
        register("probe", caption="The probe caption.", needs=("m_c",))(fig_probe)
        register("absent", caption="Never shown.", needs=("no_such_column|losses_x",))(
            fig_absent)
        with pytest.raises(ValueError, match="already registered"):
            register("probe", caption="again")(fig_probe)
        page = write_report(run_dir).read_text()
    finally:
        FIGURES.pop("probe", None)
        FIGURES.pop("absent", None)
    assert drawn == ["probe"]  # a figure whose data the run lacks is not drawn at all
    assert 'id="fig-probe"' in page and "The probe caption." in page
    assert 'id="fig-absent"' not in page and "Never shown." not in page
    png = run_dir / FIGURES_DIR / "probe.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    assert not (run_dir / FIGURES_DIR / "absent.png").exists()
    assert "figures/probe.png" in read_marker(run_dir)["files"]
    # the built-in figures come first, in their order
    order = [page.index(f'id="fig-{n}"') for n in (*CORE_FIGURES, "probe")]
    assert order == sorted(order)


def test_page_is_self_contained(runs):
    page, _ = read(runs.folder_run)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    assert re.search(r"<script[^>]+src=", page) is None


def test_unreadable_images_are_listed(runs):
    page, run = read(runs.csv_run)
    assert run["input"]["unreadable"] == 1
    assert int(summary_values(page)["unreadable"]) == 1
    section = page[page.index("<section id=unreadable>"):]
    assert "imgs/broken.png" in section


def test_per_class_table_counts(runs):
    page, _ = read(runs.folder_run)
    scores = pd.read_csv(runs.folder_run / "scores.csv", dtype={"given_label": str})
    table = page[page.index("<table class=grid id=class-table>"):]
    table = table[: table.index("</table>")]
    for c, group in scores.groupby("given_label"):
        cells = f"<tr><td>{c}</td><td>{len(group):,}</td><td>{int(group['flagged'].sum()):,}</td>"
        assert cells in table
    assert "given ↓ / predicted →" in page  # the confusion matrix among flagged samples


def test_order_parameters_and_phases_are_drawn_when_present(runs, tmp_path):
    run_dir = copy_run(runs.folder_run, tmp_path / "run")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    n = len(metrics)
    metrics["A"] = np.where(np.arange(n) % 2 == 0, np.linspace(5, 1, n), np.nan)
    metrics["A_0"] = metrics["A"] / 3
    metrics["R"] = np.where(metrics["A"].notna(), 0.3, np.nan)
    metrics["R_cw"] = np.where(metrics["A"].notna(), -0.2, np.nan)
    metrics["phase"] = ["I"] + ["II"] * (n - 1)
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    run = json.loads((run_dir / "run.json").read_text())
    run["phase_boundaries"] = {"I": [1, 1], "II": [2, n]}
    (run_dir / "run.json").write_text(json.dumps(run))
    page = write_report(run_dir).read_text()
    assert (run_dir / FIGURES_DIR / "order_parameters.png").is_file()
    assert 'id="fig-order_parameters"' in page
    assert "II: epochs 2–" in page


def test_missing_optional_columns_are_skipped(runs, tmp_path):
    run_dir = copy_run(runs.folder_run, tmp_path / "run")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    metrics[["epoch", "train_loss", "m_c", "m_w"]].to_csv(run_dir / "metrics.csv", index=False)
    (run_dir / "losses.npy").unlink()
    page = write_report(run_dir).read_text()
    assert not (run_dir / FIGURES_DIR / "order_parameters.png").exists()
    assert not (run_dir / FIGURES_DIR / "loss_evolution.png").exists()  # stale copy removed
    assert (run_dir / FIGURES_DIR / "loss_histogram.png").is_file()  # falls back to scores.csv
    assert "could not be drawn" not in page


def test_user_strings_are_escaped(runs, tmp_path):
    run_dir = copy_run(runs.folder_run, tmp_path / "run")
    scores = pd.read_csv(run_dir / "scores.csv", dtype=str, keep_default_na=False)
    evil = "c0/</script><script>alert(1)</script>.png"
    first = scores.index[scores["rank"] == "1"][0]
    scores.loc[first, "sample_id"] = evil
    scores.to_csv(run_dir / "scores.csv", index=False)
    page = write_report(run_dir).read_text()
    assert "<script>alert(1)" not in page
    assert gallery(page)["items"][0][1] == evil


def test_cli_rebuilds_the_report(runs, tmp_path):
    run_dir = copy_run(runs.folder_run, tmp_path / "run")
    (run_dir / REPORT_FILE).unlink()
    shutil.rmtree(run_dir / FIGURES_DIR)
    result = CliRunner().invoke(main, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / REPORT_FILE).is_file()
    assert all((run_dir / FIGURES_DIR / f"{n}.png").is_file() for n in CORE_FIGURES)


def test_cli_report_on_a_non_run_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "run.json is missing" in result.output
    with pytest.raises(LabelcleanError):
        write_report(tmp_path)


def test_fifty_thousand_flagged_samples(tmp_path_factory):
    # how long it takes is a benchmark's question, not this test's (a timed
    # assertion fails on a busy machine)
    run_dir = big_report(tmp_path_factory.getbasetemp() / "labelclean_runs")
    page = (run_dir / REPORT_FILE).read_text()
    data = gallery(page)
    assert len(data["items"]) == 50_000
    assert page.count('class="gitem"') == 0  # rendered by the script, one page at a time
    assert len(page) < 15_000_000


def test_thumbnails_stop_at_the_limit_and_the_budget(runs):
    files = sorted(runs.folder_data.rglob("*.png"))[:20]
    thumbs, tried = make_thumbnails(files, 32, limit=5)
    assert tried == 5 and all(thumbs[:5]) and not any(thumbs[5:])
    thumbs, tried = make_thumbnails(files, 32, budget_s=0.0)
    assert tried == 0 and not any(thumbs)
    assert make_thumbnails([None, runs.csv_data / "imgs" / "broken.png"], 32) == ([None, None], 2)


def test_a_run_that_flagged_nothing(runs, tmp_path):
    run_dir = copy_run(runs.folder_run, tmp_path / "run")
    scores = pd.read_csv(run_dir / "scores.csv")
    scores["flagged"] = False
    scores.to_csv(run_dir / "scores.csv", index=False)
    np.save(run_dir / "losses.npy", np.zeros_like(np.load(run_dir / "losses.npy")))
    run = json.loads((run_dir / "run.json").read_text())
    run.update(flagged=0, kept=run["samples"], estimated_noise_rate=0.0,
               second_population_found=False, phase_boundaries={})
    run["mixture_at_t_c"] = dict.fromkeys(run["mixture_at_t_c"], 0.0) | {"bimodal": False}
    (run_dir / "run.json").write_text(json.dumps(run))
    page = write_report(run_dir).read_text()
    assert gallery(page)["items"] == []
    assert "could not be drawn" not in page and "second population" in page


def test_the_histogram_shows_what_the_mixture_was_fitted_to(runs):
    run = load_run(runs.folder_run)
    values = scores_at_t_c(run)
    # what the decision module stored, in index order
    stored = pd.read_csv(runs.folder_run / "scores.csv").sort_values("index")["score"]
    assert np.array_equal(values, stored.to_numpy())
    # The heatmap's row at t_c, rebuilt by decision.suspicion_scores from losses.npy,
    # is the same score.
    assert np.allclose(suspicion_history(run).values[run.t_c - 1], values, rtol=1e-4,
                       atol=1e-5)
    mix = run.run["mixture_at_t_c"]
    assert run.suspicion == "loss" and run.flag_cut == mix["threshold"]
    flagged = run.scores.sort_values("index")["flagged"].to_numpy()
    assert np.array_equal(flagged, values > mix["threshold"])


def test_a_run_without_stored_scores_shows_the_decision_modules_scores(tmp_path):
    # Runs made before scores.csv had a score column: the suspicion at t_c is
    # decision.suspicion_scores over the stored losses, not the raw loss of t_c.
    run_dir = write_fake_run(tmp_path / "old", 40)
    run_json = json.loads((run_dir / "run.json").read_text())
    run_json["params"].update(suspicion="logloss", window=3)
    (run_dir / "run.json").write_text(json.dumps(run_json))
    run = load_run(run_dir)
    losses = np.load(run_dir / "losses.npy").astype(np.float64)
    t_c = run.t_c
    expected = suspicion_scores(losses[t_c - 3 : t_c], None, "logloss", 3)
    assert np.allclose(scores_at_t_c(run), expected)
    assert np.allclose(histogram_data(run).values, expected)
    assert np.allclose(suspicion_history(run).values[t_c - 1], expected)


# ----------------------------------------------------------------- other suspicion scores


def labelled_lines(ax) -> dict[str, object]:
    return {line.get_label(): line for line in ax.get_lines()}


def scores_by_index(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "scores.csv").sort_values("index")


def test_loss_runs_show_the_threshold_l_c(runs, tmp_path):
    page, run_json = read(runs.folder_run)
    assert summary_values(page)["suspicion"] == "loss"
    assert "threshold l_c" in page and "area under the margin" not in page
    run = load_run(runs.folder_run)
    h = histogram_data(run)
    assert h.cut == run_json["mixture_at_t_c"]["threshold"]
    lines = labelled_lines(fig_loss_histogram(run).axes[0])
    (cut,) = [line for label, line in lines.items() if label.startswith("threshold l_c")]
    assert list(cut.get_xdata()) == [h.cut, h.cut]
    assert "threshold l_c" in labelled_lines(fig_loss_evolution(run).axes[0])
    # Runs made before the suspicion could be chosen have no params["suspicion"].
    old = load_run(write_fake_run(tmp_path / "old", 40))
    assert old.suspicion == "loss" and old.quantity == "per-sample loss"
    assert old.flag_cut == 1.2


def test_aum_report_names_the_quantity_and_the_rule(other_runs):
    page, run_json = read(other_runs.aum_run)
    assert run_json["params"]["suspicion"] == "aum"
    assert summary_values(page)["suspicion"] == "aum"
    assert "minus the area under the margin over epochs 1..t_c" in page
    assert "flag rule AUM &lt; 0" in page
    assert "threshold l_c" not in page and "loss averaged over" not in page
    assert "could not be drawn" not in page
    for name in CORE_FIGURES:
        assert f'id="fig-{name}"' in page, name


def test_aum_histogram_draws_the_scores_and_the_rule(other_runs):
    run = load_run(other_runs.aum_run)
    scores = scores_by_index(other_runs.aum_run)
    h = histogram_data(run)
    # The histogram is of the score the mixture was fitted to, not of the losses.
    assert np.array_equal(h.values, scores["score"].to_numpy())
    assert not np.allclose(h.values, scores["loss"].to_numpy())
    assert h.values.min() < 0 < h.values.max()
    n, width = len(h.values), h.bins[1] - h.bins[0]
    assert h.density.sum() * width * n + h.below + h.above == pytest.approx(n)
    # The mixture is in the same units: the clean AUM is positive (its score negative).
    assert h.mixture["m_c"] < 0 < h.mixture["m_w"]
    assert h.lo <= h.mixture["m_c"] and h.mixture["m_w"] <= h.hi
    # The cut is the AUM rule, not the mixture's crossing, and it is what flagged.
    assert run.flag_cut == h.cut == 0.0
    assert h.threshold == run.run["mixture_at_t_c"]["threshold"] != 0.0
    assert h.lo < 0.0 < h.hi
    assert np.array_equal(scores["flagged"].to_numpy(), h.values > 0)
    fig = fig_loss_histogram(run)
    ax = fig.axes[0]
    lines = labelled_lines(ax)
    assert list(lines["flag rule: AUM < 0 (score > 0)"].get_xdata()) == [0.0, 0.0]
    assert not any(label.startswith("threshold l_c") for label in lines)
    (crossing,) = [line for label, line in lines.items() if label.startswith("mixture crossing")]
    assert list(crossing.get_xdata()) == [h.threshold, h.threshold]
    assert "area under the margin" in ax.get_xlabel()
    assert ax.get_xlim() == (h.lo, h.hi)


def test_aum_populations_and_heatmap_are_in_the_score_units(other_runs, tmp_path):
    run = load_run(other_runs.aum_run)
    scores = scores_by_index(other_runs.aum_run)["score"].to_numpy()
    hist = suspicion_history(run)
    assert hist.in_score_units
    # Rebuilt from margins.npy: minus the margin averaged over epochs 1..t.
    assert np.allclose(hist.values[run.t_c - 1], scores, rtol=1e-4, atol=1e-5)
    heat = fig_loss_evolution(run).axes[0]
    assert {"m_c", "m_w", "flag rule: AUM < 0 (score > 0)"} <= set(labelled_lines(heat))
    assert "AUM" in heat.get_ylabel() and heat.get_ylim()[0] < 0
    sep = fig_separation(run).axes[0]
    assert "flag rule: AUM < 0 (score > 0)" in labelled_lines(sep)
    m_c = (run.metrics["m_c"] - run.metrics["s_c"]).min()
    assert m_c < 0 and sep.get_ylim()[0] <= m_c  # negative scores are not cut off
    # Without margins.npy the heatmap falls back to plain losses, without the mixture.
    run_dir = copy_run(other_runs.aum_run, tmp_path / "run")
    (run_dir / "margins.npy").unlink()
    bare = load_run(run_dir)
    hist = suspicion_history(bare)
    assert not hist.in_score_units and hist.label == "per-sample loss"
    assert np.array_equal(hist.values, np.asarray(bare.losses, dtype=np.float64))
    assert not {"m_c", "m_w"} & set(labelled_lines(fig_loss_evolution(bare).axes[0]))
    page = write_report(run_dir).read_text()
    assert "margins.npy is missing" in page and "could not be drawn" not in page


def test_logloss_run(other_runs):
    page, run_json = read(other_runs.logloss_run)
    assert summary_values(page)["suspicion"] == "logloss"
    assert "log of the loss averaged over 3 epochs" in page and "threshold l_c" in page
    assert "could not be drawn" not in page
    run = load_run(other_runs.logloss_run)
    scores = scores_by_index(other_runs.logloss_run)
    h = histogram_data(run)
    assert np.array_equal(h.values, scores["score"].to_numpy())
    assert h.cut == run.flag_cut == run_json["mixture_at_t_c"]["threshold"]
    assert np.array_equal(scores["flagged"].to_numpy(), h.values > h.cut)
    assert h.values.min() < 0 and h.lo <= h.mixture["m_c"]
    hist = suspicion_history(run)
    assert np.allclose(hist.values[run.t_c - 1], h.values, rtol=1e-4, atol=1e-4)
    assert "threshold l_c" in labelled_lines(fig_loss_evolution(run).axes[0])
