"""docs/usage.md's options tables are the command line's own definitions (issue 26):
re-rendered from the click objects, they must equal the page; every option of every
subcommand has its row; the hand-written "Defaults, and why" table states the code's
defaults."""

from __future__ import annotations

import re

import click
import pytest

from labelclean import clidoc
from labelclean.cleaner import auto_batch_size
from labelclean.cli import main
from labelclean.models import DEFAULT_FEATURE_MODEL, DEFAULT_IMAGE_MODEL, DEFAULT_RGB_MODEL

PAGE = clidoc.USAGE.read_text()


def shown_table(name: str) -> str:
    start, end = clidoc.start_marker(name), clidoc.end_marker(name)
    assert PAGE.count(start) == 1 and PAGE.count(end) == 1, f"markers of {name}"
    return PAGE[PAGE.index(start) + len(start):PAGE.index(end)].strip()


def test_every_subcommand_has_a_table():
    assert set(clidoc.COMMANDS) == set(main.commands)


@pytest.mark.parametrize("name", clidoc.COMMANDS)
def test_the_options_table_is_rendered_from_the_code(name):
    assert shown_table(name) == clidoc.render(name), (
        f"docs/usage.md's options table of `labelclean {name}` is stale: "
        "rewrite it with python -m labelclean.clidoc")


@pytest.mark.parametrize("name", clidoc.COMMANDS)
def test_every_option_has_a_row_with_a_help_text(name):
    rows = {line.split(" | ")[0].lstrip("| ") for line in shown_table(name).splitlines()
            if line.startswith("| `")}
    for p in main.commands[name].params:
        if not isinstance(p, click.Option) or p.name == "help":
            continue
        assert clidoc.option_names(p) in rows, f"{name}: {p.opts} has no row"
        assert clidoc.split_help(p)[0], f"{name}: {p.opts} has no help text"


def test_the_check_mode_fails_on_a_stale_page(tmp_path, capsys):
    page = tmp_path / "usage.md"
    page.write_text(PAGE.replace("| `--seed` | `0` | integer |", "| `--seed` | `1` | integer |", 1))
    assert clidoc.main(["--check", str(page)]) == 1
    assert clidoc.main([str(page)]) == 0  # rewritten
    assert page.read_text() == PAGE
    assert clidoc.main(["--check", str(page)]) == 0


# ------------------------------------------------------------ "Defaults, and why"


def defaults_rows() -> list[tuple[list[str], str, str]]:
    """The hand-written table's rows: (options named, default cell, why cell)."""
    section = PAGE[PAGE.index("## Defaults, and why"):]
    section = section[:section.index("\n## ", 1)]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `--"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows.append((re.findall(r"`(--[a-z-]+)`", cells[0]), cells[1], cells[2]))
    return rows


def _same(shown: str, code: str) -> bool:
    shown, code = shown.strip("` "), code.strip("` ")
    try:
        return float(shown) == float(code)
    except ValueError:
        return shown == code


def test_the_defaults_table_states_the_codes_defaults():
    run = main.commands["run"]
    by_name = {o: p for p in run.params if isinstance(p, click.Option) for o in p.opts}
    rows = defaults_rows()
    assert len(rows) > 15
    for names, default, _ in rows:
        params = [by_name[n] for n in names]  # a KeyError: the table names no option
        if names == ["--model"]:
            for model in (DEFAULT_RGB_MODEL, DEFAULT_IMAGE_MODEL, DEFAULT_FEATURE_MODEL):
                assert f"`{model}`" in default
            continue
        items = default.split(", ")
        assert len(items) == len(params), (names, default)
        for p, item in zip(params, items, strict=True):
            if clidoc.split_help(p)[1] is not None:  # a default described in words
                continue
            assert _same(item, clidoc.default_text(p)), (p.opts, item, clidoc.default_text(p))


def test_the_batch_size_row_gives_the_codes_thresholds():
    switches = [n for n in range(2, 20_000) if auto_batch_size(n) != auto_batch_size(n - 1)]
    row = next(why for names, _, why in defaults_rows() if names == ["--batch-size"])
    assert len(switches) == 2
    for n in switches:
        assert f"{n:,}" in row, f"--batch-size switches at {n:,}"
    assert "--model" in clidoc.render("run")
    help_text = next(p.help for p in main.commands["run"].params if p.name == "model")
    for model in (DEFAULT_RGB_MODEL, DEFAULT_IMAGE_MODEL, DEFAULT_FEATURE_MODEL):
        assert model in help_text
