"""The options tables of docs/usage.md, rendered from the command line's own definitions.

Each subcommand's table lists every option with its default, the values it takes and
its help text, read from the click objects in :mod:`labelclean.cli`, so the page cannot
drift from the code: ``tests/test_docs_options.py`` re-renders every table and fails
when the page differs. After changing an option, rewrite the tables with::

    python -m labelclean.clidoc            # rewrites docs/usage.md in place
    python -m labelclean.clidoc --check    # exit status 1 when a table is stale

The tables live between ``<!-- options:<command>:start -->`` and
``<!-- options:<command>:end -->`` marker comments.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from . import cli

#: The subcommands documented, in the page's order.
COMMANDS = ("run", "demo", "report", "apply", "bench")
#: The page the tables live in (relative to the repository root).
USAGE = Path(__file__).resolve().parents[1] / "docs" / "usage.md"

_DEFAULT_IN_HELP = re.compile(r"\s*\[default: ([^\]]*)\]")
_TYPE_NAMES = {"integer": "integer", "float": "number", "text": "text", "boolean": "flag"}


def start_marker(command: str) -> str:
    return f"<!-- options:{command}:start -->"


def end_marker(command: str) -> str:
    return f"<!-- options:{command}:end -->"


def command(name: str) -> click.Command:
    """The click command ``labelclean <name>``."""
    found = cli.main.commands.get(name)
    if found is None:
        raise KeyError(f"labelclean has no subcommand {name!r}")
    return found


def options(cmd: click.Command) -> list[click.Option]:
    """The options a table shows: every option but ``--help``, in definition order."""
    return [p for p in cmd.params if isinstance(p, click.Option) and p.name != "help"]


def arguments(cmd: click.Command) -> list[click.Argument]:
    """The positional arguments the usage line names (an unnamed one, like bench's
    extra seeds, is left out)."""
    return [p for p in cmd.params if isinstance(p, click.Argument) and p.metavar != ""]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def option_names(p: click.Option) -> str:
    names = ", ".join(f"`{o}`" for o in p.opts)
    if p.secondary_opts:
        names += " / " + ", ".join(f"`{o}`" for o in p.secondary_opts)
    return names


def split_help(p: click.Option) -> tuple[str, str | None]:
    """The help text without its ``[default: ...]`` note, and the note's text."""
    text = p.help or ""
    m = _DEFAULT_IN_HELP.search(text)
    if m is None:
        return text, None
    return (text[:m.start()] + text[m.end():]).strip(), m.group(1).strip()


def default_text(p: click.Option) -> str:
    """What a user gets by leaving the option out, as the table shows it."""
    _, said = split_help(p)
    if said is not None:
        return _cell(said)
    if p.required:
        return "required"
    default = None if getattr(p.default, "name", None) == "UNSET" else p.default
    if p.is_flag and p.secondary_opts:
        return f"`{p.opts[0] if default else p.secondary_opts[0]}`"
    if p.is_flag:
        return "on" if default else "off"
    if p.default is None:
        return "none"
    if p.multiple:
        return "`" + " ".join(str(v) for v in p.default) + "`"
    return f"`{p.default}`"


def values_text(p: click.Option) -> str:
    """The values an option takes."""
    t = p.type
    if p.is_flag:
        return "flag"
    if isinstance(t, click.Choice):
        text = ", ".join(f"`{c}`" for c in t.choices)
    elif p.callback is cli.auto_or_int:
        text = "`auto` or integer"
    elif isinstance(t, click.IntRange):
        text = "integer" + (f" ≥ {t.min}" if t.min is not None else "") + (
            f" ≤ {t.max}" if t.max is not None else "")
    elif isinstance(t, click.Path):
        text = "path"
    else:
        text = _TYPE_NAMES.get(t.name, t.name)
    return text + (", repeatable" if p.multiple else "")


def render(name: str) -> str:
    """The markdown table of ``labelclean <name>``'s options (no trailing newline)."""
    cmd = command(name)
    usage = " ".join([f"labelclean {name} [OPTIONS]"]
                     + [a.human_readable_name for a in arguments(cmd)])
    lines = [f"`{usage}`: {_cell((cmd.help or '').split(chr(10))[0])}", ""]
    if not options(cmd):
        return "\n".join(lines + ["No options."])
    lines += ["| option | default | values | what it does |", "|---|---|---|---|"]
    for p in options(cmd):
        help_text, _ = split_help(p)
        lines.append(f"| {option_names(p)} | {default_text(p)} | {values_text(p)} | "
                     f"{_cell(help_text)} |")
    return "\n".join(lines)


def rewrite(text: str, commands: tuple[str, ...] = COMMANDS) -> str:
    """``text`` with every subcommand's table between its markers re-rendered."""
    for name in commands:
        start, end = start_marker(name), end_marker(name)
        i, j = text.find(start), text.find(end)
        if i < 0 or j < i:
            raise ValueError(f"the page has no {start} ... {end} pair")
        text = text[:i + len(start)] + "\n" + render(name) + "\n" + text[j:]
    return text


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    page = Path(paths[0]) if paths else USAGE
    old = page.read_text()
    new = rewrite(old)
    if new == old:
        print(f"{page}: the options tables are up to date")
        return 0
    if check:
        print(f"{page}: an options table is stale; run python -m labelclean.clidoc",
              file=sys.stderr)
        return 1
    page.write_text(new)
    print(f"{page}: rewrote the options tables")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
