"""The results tables of README.md and docs/benchmarks.md, rendered from records.

Every results table the docs carry between ``<!-- <name>:start -->`` and
``<!-- <name>:end -->`` marker comments is rendered from the records in
``docs/results/*.jsonl`` (one JSON object per measured cell: data, labels, size,
seed, version, commit, machine, settings, metrics, verdict and the command that
measured it), so a table cannot drift from its data: ``tests/test_docs_tables.py``
re-renders every table and fails when a page differs. After adding or changing a
record, rewrite the pages with::

    python -m labelclean.doctables            # rewrites README.md and docs/benchmarks.md
    python -m labelclean.doctables --check    # exit status 1 when a table is stale

A record that a script wrote carries its ``commit``. A record carried over from a
number that was only ever typed into a page carries ``"source": "transcribed from
<page> at <commit>"`` (and ``commit: null``), and its rendered row says
"transcribed". The calibration table's renderer is ``examples/calibration.py``'s
``table`` (the script that writes those records); it is loaded from the checkout,
as the pages are.
"""

from __future__ import annotations

import importlib.util
import json
import sys
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
    """What ``text`` holds between ``name``'s markers, stripped."""
    start, end = start_marker(name), end_marker(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(end) < text.index(start):
        raise ValueError(f"the page needs exactly one {start} ... {end} pair")
    return text[text.index(start) + len(start):text.index(end)].strip()


def replace(text: str, name: str, body: str) -> str:
    """``text`` with ``body`` between ``name``'s markers."""
    shown(text, name)  # checks the pair
    start, end = start_marker(name), end_marker(name)
    i, j = text.index(start), text.index(end)
    return text[:i + len(start)] + "\n" + body.strip() + "\n" + text[j:]


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
    return bool(r.get("source"))


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


def _example(name: str):
    """``examples/<name>.py`` as a module (the scripts import each other by name)."""
    folder = str(ROOT / "examples")
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(folder)


def calibration_table(records: list[dict]) -> str:
    """docs/benchmarks.md's calibration table: ``examples/calibration.py``'s renderer."""
    return _example("calibration").table(records)


@dataclass(frozen=True)
class Block:
    """One rendered table: the page, its marker name, its records and its renderer."""

    page: str
    name: str
    records: str
    render: Callable[[list[dict]], str]


BLOCKS = (
    Block("README.md", "headline-table", "zoo.jsonl", headline_table),
    Block("docs/benchmarks.md", "calibration-table", "calibration.jsonl", calibration_table),
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
)


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
