"""The results tables of README.md, docs/benchmarks.md and docs/performance.md, rendered
from records.

Every results table the docs carry between ``<!-- <name>:start -->`` and
``<!-- <name>:end -->`` marker comments is rendered from the records in
``docs/results/*.jsonl`` (one JSON object per measured cell: data, labels, size,
seed, version, commit, machine, settings, metrics, verdict and the command that
measured it), so a table cannot drift from its data: ``tests/test_docs_tables.py``
re-renders every table and fails when a page differs. After adding or changing a
record, rewrite the pages with::

    python -m labelclean.doctables            # rewrites the pages
    python -m labelclean.doctables --check    # exit status 1 when a table is stale

A record that a script wrote carries its ``commit``. A record carried over from a
number that was only ever typed into a page carries ``"source": "transcribed from
<page> at <commit>"`` (and ``commit: null``), and its rendered row says
"transcribed". Any other ``source`` says how a script's output became the
record. The calibration table's renderer is ``studies/calibration.py``'s
``table`` (the script that writes those records); it is loaded from the
checkout, as the pages are.
"""

from __future__ import annotations

import importlib.util
import json
import re
import statistics
import string
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: The repository root (the pages and records live in a checkout, not in the package).
ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path("docs") / "results"


def start_marker(name: str) -> str:
    return f"<!-- {name}:start -->"


def end_marker(name: str) -> str:
    return f"<!-- {name}:end -->"


def shown(text: str, name: str) -> str:
    """What ``text`` holds between ``name``'s markers, stripped (and dedented: a block
    inside a list item is indented with its markers)."""
    start, end = start_marker(name), end_marker(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(end) < text.index(start):
        raise ValueError(f"the page needs exactly one {start} ... {end} pair")
    return textwrap.dedent(text[text.index(start) + len(start):text.index(end)]).strip()


def _indent(text: str, i: int) -> str:
    """The blanks before position ``i`` on its line (the markers' indentation)."""
    before = text[text.rfind("\n", 0, i) + 1:i]
    return before if not before.strip() else ""


def replace(text: str, name: str, body: str) -> str:
    """``text`` with ``body`` between ``name``'s markers, indented as the start marker is."""
    shown(text, name)  # checks the pair
    start, end = start_marker(name), end_marker(name)
    i, j = text.index(start), text.index(end)
    indent = _indent(text, i)
    body = textwrap.indent(body.strip(), indent)
    return text[:i + len(start)] + "\n" + body + "\n" + indent + text[j:]


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------ cells


def _f3(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def _n(x: float | int | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def _noise(x: float) -> str:
    return "0" if x == 0 else f"{x:.3f}"


def _cmd(command: str) -> str:
    return f"`{command}`"


def _short_version(version: str) -> str:
    return version[:-2] if version.endswith(".0") else version


def transcribed(r: dict) -> bool:
    """Was the number typed into a page by hand (no script wrote the record)?"""
    return str(r.get("source") or "").startswith("transcribed from ")


def _version(r: dict) -> str:
    if transcribed(r):
        return f"{r['version']} (transcribed)"
    return f"{r['version']}, {r['commit']}"


def _commands(r: dict) -> str:
    """The command that measured the row, and cleanlab's where another one measured it."""
    text = _cmd(r["command"])
    cl = r.get("cleanlab") or {}
    if cl.get("command") and cl["command"] != r["command"]:
        text += f"; cleanlab: {_cmd(cl['command'])}"
    return text


def _cleanlab(r: dict, *, notes: bool = True) -> str:
    cl = r.get("cleanlab") or {}
    if cl.get("f1") is None and cl.get("wall_s") is None:
        return cl.get("note") or "not run"
    f1 = "—" if cl.get("f1") is None else f"{cl['f1']:.3f}"
    extra = [f"{_n(cl['wall_s'])} s"] if cl.get("wall_s") is not None else []
    if cl.get("version") and cl["version"] != r["version"]:
        extra.append(f"with {cl['version']}")
    if notes and cl.get("note"):
        extra.append(cl["note"])
    return f"{f1} ({'; '.join(extra)})" if extra else f1


def _sources(records: list[dict]) -> str:
    """The footnote naming where the transcribed rows came from."""
    found = sorted({r["source"] for r in records if transcribed(r)})
    if not found:
        return ""
    return ("\n\n\"transcribed\": the number was typed into a page by hand from the run's "
            "output, and no machine-written record of that run survives; the record carries "
            "it over (" + "; ".join(found) + ") with its version, its command and the commit "
            "that first wrote it (`first_written`).")


def _wall(m: dict) -> str:
    """Wall seconds; a note of ``*`` or ``**`` is a footnote mark, any other is said."""
    note = m.get("wall_note") or ""
    mark = {"*": " \\*", "**": " \\*\\*", "": ""}.get(note, f" ({note})")
    return _n(m["wall_s"]) + mark


# ------------------------------------------------------------------ tables


def zoo_table(records: list[dict]) -> str:
    """docs/benchmarks.md's dataset-zoo table (the CPU rows, ``table == "zoo"``)."""
    rows = [r for r in records if r["table"] == "zoo"]
    head = ("| data | labels | n | true noise | model | F1 | precision | recall | flagged | "
            "verdict | t_c / epochs | wall s | cleanlab F1 (wall s) | version | command |")
    lines = [head, "|" + "---|" * 15]
    group = rows[0]["group"] if rows else None
    for r in rows:
        if r["group"] != group:
            group = r["group"]
            lines.append("| *checked after the rule was chosen:* |" + " |" * 14)
        m, then = r["metrics"], r.get("then")
        data = r["data"] + (f" ({r['note']})" if r.get("note") else "")
        if then:
            v = _short_version(then["version"])
            f1 = f"— ({v} flagged: {then['f1']:.3f})"
            p, rc = f"({then['precision']:.3f})", f"({then['recall']:.3f})"
            flagged = f"{_pct(m['flagged_share'])} ({v}: {_pct(then['flagged_share'])})"
        else:
            f1 = _f3(m["f1"]) if m["f1"] is None else f"**{m['f1']:.3f}**"
            p, rc, flagged = _f3(m["precision"]), _f3(m["recall"]), _pct(m["flagged_share"])
        verdict = f"**{r['verdict']}**" if then else r["verdict"]
        if then:
            verdict += (f" (replayed under {_short_version(r['verdict_rules'][:5])}'s rules; "
                        f"{_short_version(then['version'])}: {then['verdict']})")
        if r.get("verdict_detail"):
            verdict += f": {r['verdict_detail']}"
        lines.append(
            f"| {data} | {r['labels']} | {_n(r['samples'])} | {_noise(r['true_noise'])} | "
            f"`{r['model']}` | {f1} | {p} | {rc} | {flagged} | {verdict} | "
            f"{m['t_c']} / {m['epochs']} | {_wall(m)} | {_cleanlab(r, notes=False)} | "
            f"{_version(r)} | {_commands(r)} |")
    return "\n".join(lines) + _sources(rows) + "\n"


def zoo_gpu_table(records: list[dict]) -> str:
    """docs/benchmarks.md's CIFAR-10N label sets on one GPU (``table == "zoo-gpu"``)."""
    rows = [r for r in records if r["table"] == "zoo-gpu"]
    head = ("| labels | true noise | verdict | F1 | precision | recall | flagged | "
            "`t_c` / epochs | wall s | cleanlab F1 | cleanlab wall s | version | command |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        m, cl = r["metrics"], r.get("cleanlab") or {}
        f1 = _f3(m["f1"]) if m["f1"] is None else f"**{m['f1']:.3f}**"
        lines.append(
            f"| {r['labels']} | {_noise(r['true_noise'])} | {r['verdict']} | {f1} | "
            f"{_f3(m['precision'])} | {_f3(m['recall'])} | {_pct(m['flagged_share'])} | "
            f"{m['t_c']} / {m['epochs']} | {_wall(m)} | {_f3(cl.get('f1'))} | "
            f"{_n(cl.get('wall_s'))} | {_version(r)} | {_commands(r)} |")
    return "\n".join(lines) + _sources(rows) + "\n"


def headline_table(records: list[dict]) -> str:
    """README.md's table: the zoo rows marked ``headline`` (their rank), for a first read."""
    rows = sorted((r for r in records if r.get("headline")), key=lambda r: r["headline"])
    head = ("| data (images) | labels | verdict | labelclean F1 | cleanlab 5-fold F1 "
            "(same model) | version | command |")
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        m, then = r["metrics"], r.get("then")
        labels = r["labels"]
        if labels.startswith(("real", "every")):
            labels += f", {100 * r['true_noise']:.1f}% wrong"
        if m["f1"] is not None:
            f1 = f"**{m['f1']:.3f}**"
        elif m["flagged_share"]:
            f1 = f"{_pct(m['flagged_share'])} flagged, all clean"
        else:
            f1 = "nothing flagged"
        verdict = r["verdict"]
        if r.get("verdict_detail"):
            verdict += f": {r['verdict_detail']}"
        if then:
            verdict += (f" (the {_short_version(then['version'])} run {then['verdict']} at "
                        f"F1 {then['f1']:.3f}; this verdict is its replay under "
                        f"{_short_version(r['verdict_rules'][:5])}'s rules)")
        lines.append(
            f"| {r['data']} ({_n(r['samples'])}) | {labels} | {verdict} | {f1} | "
            f"{_cleanlab(r, notes=False)} | {_version(r)} | {_commands(r)} |")
    return "\n".join(lines) + _sources(rows) + "\n"


def mnist_folder_table(records: list[dict]) -> str:
    """docs/benchmarks.md's ``labelclean run`` on a 10,000-image MNIST folder."""
    head = ("| version (rule) | labels | threads, load | precision | recall | F1 | flagged | "
            "t_c (epochs run) | test acc. at t_c | wall s | command |")
    lines = [head, "|" + "---|" * 11]
    for r in records:
        m = r["metrics"]
        rule = r["settings"].rsplit("suspicion ", 1)[-1].rstrip(")")
        wall = _n(m["wall_s"]) + (f" ({m['wall_note']})" if m.get("wall_note") else "")
        version = f"{r['version']} (`{rule}`), " + (
            "transcribed" if transcribed(r) else r["commit"])
        lines.append(
            f"| {version} | {r['labels']} | {r['threads']}, {r['load']} | "
            f"{_f3(m['precision'])} | {_f3(m['recall'])} | {_f3(m['f1'])} | "
            f"{_pct(m['flagged_share'])} | {m['t_c']} ({m['epochs']}) | "
            f"{_f3(m['test_accuracy_at_t_c'])} | {wall} | {_cmd(r['command'])} |")
    return "\n".join(lines) + _sources(records) + "\n"


#: The offline MNIST study's tables (docs/benchmarks.md, from "The offline study" on):
#: per table, its columns as ``(header, metric or record key, format)``. Formats:
#: ``text``, ``int``, ``f1`` / ``f3`` (decimals), ``msd3`` (``{"mean", "sd"}`` as
#: ``mean ± sd``), ``seeds`` (one integer per seed, ``a/b/c``), ``tc_epochs``
#: (``t_c (epochs run)``).
STUDY_COLUMNS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "rules": (("model", "model_name", "text"), ("setting", "setting", "text"),
              ("rule", "rule", "text"), ("F1", "f1", "msd3"),
              ("t_c (per seed)", "t_c", "seeds"), ("flagged", "flagged_share", "msd3"),
              ("rule's own oracle", "oracle_f1", "msd3"),
              ("paper-rule oracle", "paper_oracle_f1", "msd3")),
    "train-pass": (("model", "model_name", "text"), ("setting", "setting", "text"),
                   ("F1, training pass", "f1_train_pass", "msd3"),
                   ("F1, eval pass", "f1_eval_pass", "msd3")),
    "cleanlab-msd": (("model", "model_name", "text"), ("setting", "setting", "text"),
                     ("method", "method", "text"), ("F1", "f1", "msd3"),
                     ("flagged", "flagged_share", "msd3"), ("passes", "passes", "f1"),
                     ("CPU s", "cpu_s", "f1"), ("seeds", "n_seeds", "int")),
    "cleanlab-one": (("model", "model_name", "text"), ("setting", "setting", "text"),
                     ("method", "method", "text"), ("F1", "f1", "f3"),
                     ("flagged", "flagged_share", "f3"), ("passes", "passes", "f1"),
                     ("CPU s", "cpu_s", "f1"), ("seeds", "n_seeds", "int")),
    "q": (("rate", "rate", "text"), ("seed", "seed", "int"), ("F1", "f1", "f3"),
          ("est. rate", "estimated_rate", "f3"), ("t_c (epochs run)", "t_c", "tc_epochs"),
          ("a_n", "a_n", "f3"), ("a_c", "a_c", "f3"), ("a_p", "a_p", "f3"), ("Q", "q", "f3")),
}


def _study_cell(r: dict, key: str, fmt: str) -> str:
    m = r["metrics"]
    value = m.get(key, r.get(key))
    if fmt == "text":
        return str(value)
    if fmt == "int":
        return str(int(value))
    if fmt in ("f1", "f3"):
        return f"{value:.{fmt[1]}f}"
    if fmt == "msd3":
        return f"{value['mean']:.3f} ± {value['sd']:.3f}"
    if fmt == "seeds":
        return "/".join(str(v) for v in value)
    if fmt == "tc_epochs":
        return f"{m['t_c']} ({m['epochs']})"
    raise ValueError(f"unknown column format {fmt!r}")


def study_table(table: str, columns: str) -> Callable[[list[dict]], str]:
    """A renderer for the offline study's table ``table`` (its ``columns`` spec)."""
    spec = STUDY_COLUMNS[columns]

    def render(records: list[dict]) -> str:
        rows = [r for r in records if r["table"] == table]
        lines = ["| " + " | ".join([h for h, _, _ in spec] + ["version", "command"]) + " |",
                 "|" + "---|" * (len(spec) + 2)]
        for r in rows:
            cells = [_study_cell(r, key, fmt) for _, key, fmt in spec]
            lines.append("| " + " | ".join(cells + [_version(r), _cmd(r["command"])]) + " |")
        return "\n".join(lines) + _sources(rows) + "\n"

    render.__doc__ = f"docs/benchmarks.md's offline-study table {table!r}."
    return render


#: A column (or, transposed, a row) of a :func:`cells_table`: its header and the
#: templates of its cell, tried in order; the first whose fields the record has is
#: used (none: a blank cell).
Column = tuple[str, tuple[str, ...]]


class _Cells(string.Formatter):
    """``str.format`` for results cells: ``None`` is "—"; a string is written as it
    is; a list is its items joined by " / "; the spec ``.1%`` writes 0.221 as
    ``22.1 %``, ``.1p`` as ``22.1`` and ``r`` writes the number as the record holds it."""

    def format_field(self, value, spec):
        if value is None:
            return "—"
        if isinstance(value, list):
            return " / ".join(self.format_field(v, spec) for v in value)
        if isinstance(value, str):
            return value
        if spec.endswith("%"):
            return format(100 * value, spec[:-1] + "f") + " %"
        if spec.endswith("p"):
            return format(100 * value, spec[:-1] + "f")
        if spec == "r":
            return str(value)
        return format(value, spec)


def template_fields(template: str) -> list[tuple[str, str]]:
    """``(field, spec)`` of each replacement field in ``template``."""
    return [(f, spec or "") for _, f, spec, _ in string.Formatter().parse(template) if f]


def _cell(r: dict, header: str, templates: tuple[str, ...]) -> str:
    """The first of ``templates`` whose fields ``r`` (or its metrics) has, filled; "—"
    where they are all ``None``; the texts ``r["bold"][header]`` set in bold."""
    values = {**r, **r["metrics"]}
    for template in templates:
        fields = [f for f, _ in template_fields(template)]
        if not all(f in values for f in fields):
            continue
        if fields and all(values[f] is None for f in fields):
            return "—"
        cell = _Cells().format(template, **values)
        for text in (r.get("bold") or {}).get(header, ()):
            cell = cell.replace(text, f"**{text}**", 1)
        return cell
    return ""


def _row(cells: list[str]) -> str:
    """A table row; a blank cell is written ``| |``."""
    return re.sub(r"\|  (?=\|)", "| ", "| " + " | ".join(cells) + " |")


def _command_cell(r: dict) -> str:
    """The command as code, or as words where no command was kept."""
    return _commands(r) if r.get("command_kept", True) else r["command"]


def cells_table(table: str, columns: tuple[Column, ...], *, transposed: bool = False,
                corner: str = "", first_only: tuple[str, ...] = ()) -> Callable[[list[dict]], str]:
    """A renderer for the records of ``table``: one row per record, a cell per column
    from its templates, then each record's version and command. ``transposed``: one
    column per record (headed by its ``column``) and one row per entry of ``columns``.
    A column named in ``first_only`` is blank where it repeats the row above."""

    def render(records: list[dict]) -> str:
        rows = [r for r in records if r["table"] == table]
        if transposed:
            lines = [_row([corner] + [r["column"] for r in rows]),
                     "|" + "---|" * (len(rows) + 1)]
            grid = [[label] + [_cell(r, label, t) for r in rows] for label, t in columns]
            grid.append(["version"] + [_version(r) for r in rows])
            grid.append(["command"] + [_command_cell(r) for r in rows])
            lines += [_row(cells) for cells in grid]
        else:
            lines = [_row([h for h, _ in columns] + ["version", "command"]),
                     "|" + "---|" * (len(columns) + 2)]
            above: list[str] = []
            for r in rows:
                cells = [_cell(r, h, t) for h, t in columns]
                shown_cells = [("" if h in first_only and above and above[k] == c else c)
                               for k, ((h, _), c) in enumerate(zip(columns, cells))]
                above = cells
                lines.append(_row(shown_cells + [_version(r), _command_cell(r)]))
        return "\n".join(lines) + _sources(rows) + "\n"

    render.__doc__ = f"the records of table {table!r}, rendered."
    return render


def _alts(key: str, spec: str) -> tuple[str, ...]:
    """The number with a note, a number (or numbers), or the note alone."""
    return (f"{{{key}:{spec}}} ({{{key}_note}})", f"{{{key}:{spec}}}", f"{{{key}_note}}")


#: The tables rendered by :func:`cells_table`: per marker name, its records' ``table``,
#: its columns (or rows, ``transposed``) and options. Templates are ``str.format``
#: strings over a record's metrics (see ``_Cells`` for the specs).
CELLS_TABLES: dict[str, dict] = {
    # docs/benchmarks.md
    "aggre-checks-table": dict(table="aggre-checks", columns=(
        ("check", ("{check}",)),
        ("'aggre' (precision 0.23)", ("{aggre:.2f}",)),
        ("digits sym 0.2 (0.95)", ("{digits_sym02:.2f}",)),
        ("MNIST 10k sym 0.4", ("{mnist10k_sym04:.2f}",)),
        ("'worse' (0.63)", ("{worse:.2f}",)),
        ("synthetic (1.00)", ("{synthetic:.2f}",)))),
    "learner-study-table": dict(table="learner-study", first_only=("model",), columns=(
        ("model", ("`{model}` (lr {lr:r})",)),
        ("epoch", ("{epoch}",)),
        ("train acc. (given)", ("{train_accuracy:.3f}",)),
        ("AUROC of AUM", ("{auroc:.3f}",)),
        ("best-threshold F1", ("{best_threshold_f1:.3f}",)),
        ("F1 of AUM < 0", ("{f1_aum_below_0:.3f}",)),
        ("flagged by AUM < 0", ("{flagged_share:.1%}",)))),
    "learner-recipe-table": dict(
        table="learner-recipe", first_only=("recipe (cnn:32,64,128)",), columns=(
        ("recipe (cnn:32,64,128)", ("{recipe}",)),
        ("epoch", ("{epoch}",)),
        ("train acc. (given)", ("{train_accuracy:.3f}",)),
        ("accuracy on clean labels", ("{accuracy_clean:.3f}",)),
        ("test accuracy", ("{test_accuracy:.3f}",)),
        ("AUROC of AUM", ("{auroc:.3f}",)),
        ("best-threshold F1", ("{best_threshold_f1:.3f}",)),
        ("F1 of AUM < 0", ("{f1_aum_below_0:.3f}",)))),
    "summary-table": dict(table="summary", columns=(
        ("model (data)", ("{model_name} ({size})",)),
        ("setting", ("{setting}",)),
        ("labelclean F1", ("{f1:.3f} ± {f1_sd:.3f}",)),
        ("best epoch", ("{best_epoch_f1:.3f}",)),
        ("cleanlab F1", ("{cleanlab_f1:.3f} ± {cleanlab_f1_sd:.3f}",
                         "{cleanlab_f1:.3f} ({cleanlab_seeds} seed)", "{cleanlab_note}")),
        ("labelclean / cleanlab compute",
         ("{passes:.1f} / {cleanlab_passes:.1f} = {compute_ratio:.2f}{compute_mark}",
          "{compute_ratio:.2f}{compute_mark}")),
        ("flagged on clean data (labelclean / cleanlab)",
         ("{clean_flagged_share:.1%} ({clean_seeds} seed) / {cleanlab_clean_note}",
          "{clean_flagged_share:.1%} / {cleanlab_clean_low:.1p}-{cleanlab_clean_high:.1p} %")))),
    # docs/performance.md
    "speed-0.7-table": dict(table="speed-0.7", transposed=True, columns=(
        ("training (s, `timing.train_seconds`)", ("{train_s:.1f}",)),
        ("observation (s, `timing.observe_seconds`)", ("{observe_s:.1f}",)),
        ("observation / training (`timing.observe_share`)", ("{observe_share:.1%}",)),
        ("of which the eval pass", ("{eval_pass_s:.1f} s ({eval_pass_share:.1%})",)),
        ("of which the order-parameter probe",
         ("{probe_s:.1f} s ({probe_share:.1%}; {probes} probes)",)),
        ("of which the decision (two mixture fits an epoch)",
         ("{decision_s:.2f} s ({decision_share:.1%})",)),
        ("`t_c` / epochs trained", ("{t_c} / {epochs}",)),
        ("to the end of `t_c`", ("{to_t_c_s:.0f} s",)),
        ("wall, decoding and export included", ("{wall_s:.0f} s",)),
        ("precision / recall / F1", ("{precision:.3f} / {recall:.3f} / {f1:.3f}",)),
        ("test accuracy at `t_c`", ("{test_accuracy_at_t_c:.3f}",)))),
    "speed-0.7-parts-table": dict(table="speed-0.7-parts", transposed=True, columns=(
        ("(a) plain PyTorch loop (`DataLoader`, default layout)", ("{plain_loop_s:.1f}",)),
        ("(b0) `Trainer.train_epoch`, default layout (0.6 on the CPU)",
         ("{trainer_default_layout_s:.1f}",)),
        ("(b) `Trainer.train_epoch`, channels-last (0.7)", ("{trainer_s:.1f}",)),
        ("(b0) / (b)", ("{layout_speedup:.2f}",)),
        ("eval pass as 0.6 ran it (unfolded, default layout, batch 1024)",
         ("{eval_pass_0_6_s:.2f}",)),
        ("eval pass, 0.7 (folded, channels-last, batch 512 / 128)", ("{eval_pass_s:.2f}",)),
        ("the two mixture fits", ("{mixture_fits_s:.2f}",)),
        ("one probe (K = 16, with the split)", ("{probe_s:.2f}",)))),
    "eval-pass-variants-table": dict(table="eval-pass-variants", columns=(
        ("eval pass", ("{variant}",)),
        ("regnetx_002, MNIST", ("{mnist_s:.2f} ({mnist_ratio:.2f}x)",
                                "{mnist_s:.2f}, plus {mnist_build_s:.2f} to build",
                                "{mnist_s:.2f}")),
        ("cnn:32,64,128, CIFAR-10N", ("{cifar_s:.2f} ({cifar_ratio:.2f}x)",
                                      "{cifar_s:.2f}, plus {cifar_build_s:.2f} to build",
                                      "{cifar_s:.2f}")),
        ("logit difference", ("{mnist_logit_diff}, {cifar_logit_diff}", "{logit_diff}")))),
    "default-model-table": dict(table="default-model", columns=(
        ("model", ("{model_name}",)),
        ("params", ("{params_m:r}M",)),
        ("train img/s", ("{train_images_s}",)),
        ("10k-image epoch", ("{epoch_10k_s} s",)))),
    "throughput-0.3-table": dict(table="throughput-0.3", columns=(
        ("variant", ("{variant}",)),
        ("0.3 (2026-11-27): s / epoch", ("{s_epoch:.1f}",)),
        ("images / s", ("{images_s}",)),
        ("0.2: s / epoch", ("{s_epoch_0_2:.1f}",)),
        ("images / s", ("{images_s_0_2}",)))),
    "observation-0.3-table": dict(table="observation-0.3", columns=(
        ("part", ("{part}",)),
        ("seconds", ("{seconds:.2f}",)),
        ("share of (b)", ("{share:.0%}",)),
        ("when the default runs it", ("{when}",)))),
    "loss-pass-replay-table": dict(table="loss-pass-replay", columns=(
        ("model", ("{model_name}",)),
        ("setting", ("{setting}",)),
        ("eval pass every epoch (default)", _alts("every_epoch", ".3f")),
        ("every 2nd epoch", _alts("every_2nd_epoch", ".3f")),
        ("training pass", _alts("training_pass", ".3f")),
        ("eval 5, then training pass", _alts("eval5_then_training", ".3f")))),
    "probe-0.1-table": dict(table="probe-0.1", columns=(
        ("model", ("{model_name}",)),
        ("parameters", ("{parameters:,}",)),
        ("training step", ("{step_ms_low:r}-{step_ms_high:r} ms",)),
        ("probe, K = 16 (with split)",
         ("{k16_s_low:r}-{k16_s_high:r} s ({k16_split_s_low:r}-{k16_split_s_high:r} s)",
          "{k16_s_low:r}-{k16_s_high:r} s ({k16_split_s:r} s)")),
        ("in training steps",
         ("{k16_steps_low:r}-{k16_steps_high:r} ({k16_split_steps_low:r}-"
          "{k16_split_steps_high:r})",)),
        ("share of an epoch",
         ("{k16_pct_low:r}-{k16_pct_high:r} % ({k16_split_pct_low:r}-"
          "{k16_split_pct_high:r} %)",)),
        ("probe, K = 32 (with split)", ("{k32_s:r} s ({k32_split_s:r} s)",)),
        ("share of an epoch", ("{k32_pct:r} % ({k32_split_pct:r} %)",)))),
    "wall-vs-n-table": dict(table="wall-vs-n", columns=(
        ("N", ("{samples:,}",)),
        ("s / epoch (train + observe, median)", ("{train_s_epoch:.1f} + {observe_s_epoch:.1f}",)),
        ("µs / image / epoch", ("{us_per_image_epoch:,}",)),
        ("`t_c`", ("{t_c}",)),
        ("epochs", ("{epochs} ({epochs_note})", "{epochs}")),
        ("to `t_c`", ("{to_t_c_s:,} s",)),
        ("wall", ("{wall_s:,} s",)),
        ("peak RSS", ("{peak_rss_gib:.2f} GiB",)),
        ("P / R / F1", ("{precision:.3f} / {recall:.3f} / {f1:.3f}",)),
        ("test acc. at `t_c`", ("{test_accuracy_at_t_c:.3f}",)))),
    "mmap-table": dict(table="mmap", transposed=True, columns=(
        ("load (decode)", ("{load_s:.2f} s (decode + write) / {reload_s:.2f} s (reload)",
                           "{load_s:.2f} s", "{load_note}")),
        ("training epoch", ("{epoch_s:.1f} s ({epoch_speedup:.2f}x)", "{epoch_s:.1f} s")),
        ("eval-mode pass", ("{eval_pass_s:.2f} s",)))),
    "gpu-h200-tc-table": dict(table="gpu-h200-tc", columns=(
        ("run", ("{run}",)),
        ("`t_c` / epochs", ("{t_c} / {epochs}",)),
        ("to `t_c`", ("{to_t_c_s:.1f} s",)),
        ("whole run", ("{wall_s:.1f} s",)),
        ("observation / training", ("{observe_share:.1%}",)),
        ("eval pass", ("{eval_pass_s:.2f} s",)),
        ("probe", ("{probe_s:.2f} s",)),
        ("decision", ("{decision_s:.2f} s",)),
        ("peak GPU", ("{peak_gpu_mib} MiB",)),
        ("peak host RSS", ("{peak_rss_gib:.1f} GiB",)),
        ("F1", ("{f1:.3f}{f1_mark}",)))),
    "gpu-h200-loops-table": dict(table="gpu-h200-loops", columns=(
        ("loop", ("{loop}",)),
        ("s / epoch", ("{s_epoch:.2f}",)),
        ("images / s", ("{images_s:,}",)),
        ("labelclean against it", ("{labelclean_ratio:.2f}x", "(b) is {layout_ratio:.2f}x",
                                   "+{observation_cost:.1%}")))),
    "gpu-h100-amp-table": dict(table="gpu-h100-amp", columns=(
        ("autocast", ("{autocast}",)),
        ("layout", ("{layout}",)),
        ("labelclean s / epoch", ("{s_epoch:.2f}",)),
        ("plain loop s / epoch", ("{plain_s_epoch:.2f}",)),
        ("plain / labelclean", ("{plain_ratio:.2f}",)),
        ("training loss, epochs 1 → 2", ("{loss_epoch_1:.3f} → {loss_epoch_2:.3f}",)),
        ("test accuracy after 2 epochs", ("{test_accuracy:.3f}",)))),
}


def _study(name: str):
    """``studies/<name>.py`` as a module (the scripts import each other by name)."""
    folder = str(ROOT / "studies")
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "studies" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(folder)


def _minor(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2])


def default_table(records: list[dict]) -> str:
    """README.md's table: the default run (the estimate verdict) on each calibration
    cell, seed 0, from the newest minor version that ran it; the estimate beside the
    truth."""
    from ._version import __version__

    # per cell, the newest minor version's default run (seed 0, estimate verdict, from
    # 0.9 on); cells not yet rerun under the current version keep their older row,
    # its version in the row
    shown = [r for r in records if r["seed"] == 0 and _minor(r["version"]) >= (0, 9)
             and _minor(r["version"]) <= _minor(__version__)]
    newest = {r["cell"]: max(_minor(q["version"]) for q in shown if q["cell"] == r["cell"])
              for r in shown}
    rows = sorted((r for r in shown if _minor(r["version"]) == newest[r["cell"]]),
                  key=lambda r: _minor(r["version"]), reverse=True)
    head = ("| data | wrong labels | verdict | F1 of the flags written | precision: true | "
            "estimated (90% interval) | version, commit | command |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        p = (r.get("estimate") or {}).get("precision") or {}
        est = (f"{p['value']:.2f} [{p['low']:.2f}, {p['high']:.2f}]"
               if p and p.get("low") is not None and p["value"] == p["value"] else "-")
        written = r["f1"] if r["verdict"] == "flagged" else None
        f1 = f"**{written:.3f}**" if written is not None else "nothing written"
        lines.append(
            f"| {r['cell']} ({_n(r['samples'])}) | {_pct(r['true_noise'])} | {r['verdict']} | "
            f"{f1} | {_f3(r['precision_would'])} | {est} | {r['version']}, {r['commit']} | "
            f"{_cmd(r['command'])} |")
    return "\n".join(lines) + "\n"


def calibration_summary(records: list[dict]) -> str:
    """docs/benchmarks.md's summary of the calibration records, one row per minor
    version from 0.9 (the estimate verdict's default): per (cell, seed) the version's
    last record. How far the estimated precision of the flags at ``t_c`` is from the
    true one in the runs that flagged, how often the interval holds the truth, whether
    each withheld run's flags were in fact below the bar, and the F1 over CIFAR-10N
    'worse' draws."""
    from .decision import MIN_PRECISION

    lines = ["| version | runs (cells) | flagged | mean abs. error of the estimated precision "
             "(flagged) | true precision inside the 90% interval (flagged) | withheld rightly "
             "(true precision < 0.5, or random labels) | withheld, flags in fact >= 0.5 "
             "precise | CIFAR-10N 'worse' "
             "draws: F1 written, min / median / max |", "|" + "---|" * 8]
    for minor in sorted({_minor(r["version"]) for r in records if _minor(r["version"]) >= (0, 9)}):
        last: dict = {}
        for r in records:
            if _minor(r["version"]) == minor and r.get("estimate"):
                last[(r["cell"], r["seed"])] = r
        runs = list(last.values())
        flagged = [r for r in runs if r["verdict"] == "flagged"]
        errors = [abs(r["estimate"]["precision"]["value"] - r["precision_would"])
                  for r in flagged]
        inside = [r["estimate"]["precision"]["low"] <= r["precision_would"]
                  <= r["estimate"]["precision"]["high"] for r in flagged]
        withheld = [r for r in runs if r["verdict"] == "withheld"]
        # random labels are to be withheld whatever share of them is wrong
        right = sum(r["precision_would"] < MIN_PRECISION or r["labels"] == "random"
                    for r in withheld)
        worse = sorted(r["f1"] for r in runs if r["labels"] == "worse"
                       and r["dataset"].startswith("cifar10n") and r["seed"] == 0)
        f1 = (f"{worse[0]:.3f} / {statistics.median(worse):.3f} / {worse[-1]:.3f} "
              f"({len(worse)} draws)" if worse else "—")
        mae = f"{statistics.fmean(errors):.3f}" if errors else "—"
        cover = f"{sum(inside)} of {len(inside)}" if inside else "—"
        lines.append(
            f"| {'.'.join(map(str, minor))} | {len(runs)} ({len({r['cell'] for r in runs})}) | "
            f"{len(flagged)} | {mae} | {cover} | {right} | {len(withheld) - right} | {f1} |")
    return "\n".join(lines) + "\n"


def learner_default_table(records: list[dict]) -> str:
    """docs/benchmarks.md's table of the default run on every CIFAR-10N cell from 0.10
    (the photo learner): the model at ``t_c`` against the clean labels, the flags, the
    epochs and seconds (seed 0; per cell its last record)."""
    last: dict = {}
    for r in records:
        if (r["dataset"].startswith("cifar10n") and r["seed"] == 0
                and _minor(r["version"]) >= (0, 10) and r.get("accuracy_clean_at_t_c")):
            last[r["cell"]] = r
    lines = ["| data | wrong labels | accuracy at t_c (clean labels) | t_c / epochs | verdict | "
             "F1 written (every flag at t_c) | wall seconds | version, commit | command |",
             "|" + "---|" * 9]
    for r in last.values():
        lines.append(
            f"| {r['cell']} | {_pct(r['true_noise'])} | {r['accuracy_clean_at_t_c']:.3f} | "
            f"{r['t_c']} / {r['epochs']} | {r['verdict']} | {r['f1']:.3f} "
            f"({r['f1_would']:.3f}) | {r['wall_s']:.0f} | {r['version']}, {r['commit']} | "
            f"{_cmd(r['command'])} |")
    return "\n".join(lines) + "\n"


def calibration_table(records: list[dict]) -> str:
    """docs/benchmarks.md's calibration table: ``studies/calibration.py``'s renderer."""
    return _study("calibration").table(records)


@dataclass(frozen=True)
class Block:
    """One rendered table: the page, its marker name, its records and its renderer."""

    page: str
    name: str
    records: str
    render: Callable[[list[dict]], str]


BLOCKS = (
    Block("README.md", "default-table", "calibration.jsonl", default_table),
    Block("docs/benchmarks.md", "headline-table", "zoo.jsonl", headline_table),
    Block("docs/benchmarks.md", "calibration-table", "calibration.jsonl", calibration_table),
    Block("docs/benchmarks.md", "calibration-summary", "calibration.jsonl",
          calibration_summary),
    Block("docs/benchmarks.md", "learner-default-table", "calibration.jsonl",
          learner_default_table),
    Block("docs/benchmarks.md", "zoo-table", "zoo.jsonl", zoo_table),
    Block("docs/benchmarks.md", "zoo-gpu-table", "zoo.jsonl", zoo_gpu_table),
    Block("docs/benchmarks.md", "mnist-folder-table", "mnist_folder.jsonl", mnist_folder_table),
    Block("docs/benchmarks.md", "study-mlp-table", "offline_study.jsonl",
          study_table("rules-mlp", "rules")),
    Block("docs/benchmarks.md", "study-cnn-table", "offline_study.jsonl",
          study_table("rules-cnn", "rules")),
    Block("docs/benchmarks.md", "study-train-pass-table", "offline_study.jsonl",
          study_table("train-pass", "train-pass")),
    Block("docs/benchmarks.md", "cleanlab-mlp-table", "offline_study.jsonl",
          study_table("cleanlab-mlp", "cleanlab-msd")),
    Block("docs/benchmarks.md", "cleanlab-cnn-table", "offline_study.jsonl",
          study_table("cleanlab-cnn", "cleanlab-one")),
    Block("docs/benchmarks.md", "retraining-q-table", "offline_study.jsonl",
          study_table("retraining-q", "q")),
) + tuple(
    Block(page, name, records, cells_table(**CELLS_TABLES[name]))
    for page, records, names in (
        ("docs/benchmarks.md", "benchmarks_misc.jsonl",
         ("aggre-checks-table", "learner-study-table", "learner-recipe-table", "summary-table")),
        ("docs/performance.md", "performance.jsonl",
         ("speed-0.7-table", "speed-0.7-parts-table", "eval-pass-variants-table",
          "default-model-table", "throughput-0.3-table", "observation-0.3-table",
          "loss-pass-replay-table", "probe-0.1-table", "wall-vs-n-table", "mmap-table",
          "gpu-h200-tc-table", "gpu-h200-loops-table", "gpu-h100-amp-table")))
    for name in names)


def render(block: Block, root: Path = ROOT) -> str:
    """The markdown ``block`` renders from its records (no surrounding blank lines)."""
    return block.render(read_records(root / RESULTS / block.records)).strip()


def rewrite(page: str, text: str, root: Path = ROOT) -> str:
    """``text`` (the page ``page``) with each of its tables re-rendered."""
    for block in BLOCKS:
        if block.page == page:
            text = replace(text, block.name, render(block, root))
    return text


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    stale = []
    for page in dict.fromkeys(b.page for b in BLOCKS):
        path = ROOT / page
        old = path.read_text()
        new = rewrite(page, old)
        if new == old:
            continue
        stale.append(page)
        if not check:
            path.write_text(new)
    if not stale:
        print("the results tables are up to date")
        return 0
    if check:
        print(f"stale results tables in {', '.join(stale)}; run python -m labelclean.doctables",
              file=sys.stderr)
        return 1
    print(f"rewrote the results tables of {', '.join(stale)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
