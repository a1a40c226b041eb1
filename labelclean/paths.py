"""The path policy: where labelclean reads, and where it may write.

One set of rules for every command and every folder it writes (``--out``, its
staging folder, ``--cache``, ``--tensorboard-dir``, ``labelclean bench --out``):

* **The input is only read.** Nothing is written at, inside or (for ``--out``,
  which ``--overwrite`` may empty) around the input: a folder input, a CSV's
  folder, and the folder the images of a path CSV share
  (:func:`image_roots`); which files and folders an input occupies is its
  format's ``footprint`` (:mod:`labelclean.formats`). One function decides
  whether a folder labelclean writes overlaps them, :func:`overlapped_input`;
  :func:`check_outside` and :func:`check_overlap` say no with it, in one line,
  before any data is read or any training starts, wherever a folder is written.
* **Class names are names, not paths.** :func:`check_class_names`, the same
  for ``labelclean run`` (at read time) and ``labelclean apply``: no control
  characters (NUL, line breaks...), none empty; a class that becomes a folder
  (image-folder inputs: ``cleaned/<class>/``) has no ``/``, is not ``.`` or
  ``..`` and has no leading or trailing spaces (``a`` and ``a `` would be
  different folders but look like one class). CSV labels are stripped of
  surrounding spaces, as always, and ``/`` is allowed there (``n/a``), but two
  spellings that differ only by those spaces are refused, not merged.
* **Outputs are no more readable than the input.** An output folder gets no
  group (other) permission when some input file is not group- (world-)
  readable (:func:`privacy_strip`, :func:`restrict_tree`): a private dataset
  does not come out as a world-readable report with thumbnails, embeddings
  and copies.
* **An input is a regular file or a folder.** A pipe (``run <(cat x.csv)``), a
  socket or a device is refused (:func:`check_input`): labelclean reads its
  input more than once, and ``labelclean apply`` reads it again later.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

from .errors import LabelcleanError


def check_input(path: str | os.PathLike, what: str = "input") -> Path:
    """``path``, refused when missing or when neither a regular file nor a folder."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise LabelcleanError(f"{what} not found: {path}") from None
    except OSError as e:
        raise LabelcleanError(f"cannot read the {what} {path}: {e.strerror or e}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = ("a pipe (as `<(...)` makes)" if stat.S_ISFIFO(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "a device")
        raise LabelcleanError(
            f"the {what} {path} is {kind}, not a file or folder: labelclean reads its input "
            "more than once (and `apply` reads it again later); save it to a file first")
    return path


def class_name_problem(name: str, *, folder: bool) -> str | None:
    """What is wrong with ``name`` as a class name (None: nothing); ``folder``:
    the class is also a folder name (see the module docstring)."""
    if not name.strip():
        return "is empty"
    bad = next((c for c in name if ord(c) < 32 or 127 <= ord(c) < 160), None)
    if bad is not None:
        return f"contains the control character {bad!r}"
    if folder:
        if "/" in name or "\\" in name and os.sep == "\\":
            return "contains a path separator"
        if name in (".", ".."):
            return "is not a folder name"
        if name != name.strip():
            return "has leading or trailing spaces (rename the folder)"
    return None


def check_utf8_names(names: Iterable[str], where: str | os.PathLike) -> None:
    """Refuse file names that are not valid UTF-8 (Python holds their stray bytes
    as lone surrogates, ``'caf\\udce9.png'``), before any training: the tables a
    run writes go through pandas, whose text columns cannot hold them, so such a
    run would fail after training. Renaming the files is the user's fix."""
    bad = [n for n in names if any(0xD800 <= ord(c) <= 0xDFFF for c in n)]
    if bad:
        shown = os.fsencode(bad[0])
        encoding = sys.getfilesystemencoding()
        if encoding.lower().replace("-", "") != "utf8":
            raise LabelcleanError(
                f"{len(bad)} file names in {where} cannot be decoded with this locale's "
                f"encoding, {encoding} (first: {shown!r}); run under a UTF-8 locale "
                "(e.g. LC_ALL=C.UTF-8)")
        raise LabelcleanError(
            f"{len(bad)} file names in {where} are not valid UTF-8 (first: {shown!r}); "
            "labelclean cannot keep such names through its tables: rename them "
            "(e.g. `convmv -f latin1 -t utf8`)")


def check_class_names(names: Iterable[str], what: str, *, folder: bool) -> None:
    """Refuse class names against the policy (module docstring); ``what`` says
    where they come from (``data.csv: label``)."""
    stripped: dict[str, str] = {}
    for name in names:
        name = str(name)
        problem = class_name_problem(name, folder=folder)
        if problem:
            raise LabelcleanError(f"{what} {name!r} {problem}; class names must be plain names")
        key = name.strip()
        if key in stripped and stripped[key] != name:
            one, other = sorted((stripped[key], name))
            raise LabelcleanError(
                f"{what}s {one!r} and {other!r} differ only by leading or trailing "
                "spaces; make them one spelling (or two names)")
        stripped[key] = name


def image_roots(files: list) -> list[Path]:
    """The deepest folder every image lies in; when that is the filesystem root
    (images spread over unrelated trees), each image's folder instead."""
    # resolve() once per folder, not per image: a CSV may list millions
    folders = {os.path.dirname(os.path.abspath(f)) for f in files}
    parents = sorted({str(Path(d).resolve()) for d in folders})
    common = Path(os.path.commonpath(parents))
    if common != Path(common.anchor):
        return [common]
    return [Path(p) for p in parents]


def within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """``path`` is ``folder`` or lies inside it (both resolved, links followed)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def overlapped_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike], *,
                     replaced: bool) -> Path | None:
    """The policy's one question: the first of ``inputs`` (files and folders, as an
    input format's footprint lists them) that a folder labelclean writes at ``path``
    would overlap, resolved; None when it overlaps none.

    Every such folder is refused at an input and inside an input folder. Beyond that:

    * ``replaced=False``, a folder only added to (``--cache``, the TensorBoard
      folder): also anywhere in the folder a file input lies in;
    * ``replaced=True``, a folder swapped in whole, which ``--overwrite`` may empty
      (``--out``, its staging and state folders): also a folder that contains an
      input, and a file input's own folder (a run folder beside the CSV, in that
      folder, is fine: only the CSV and its folder are kept whole).
    """
    where = Path(path).resolve()
    for src in inputs:
        src = Path(src).resolve()
        if not replaced:
            clash = within(where, src if src.is_dir() else src.parent)
        elif src.is_dir():
            clash = within(where, src) or within(src, where)
        else:
            clash = where == src.parent or within(src, where)
        if clash:
            return src
    return None


def check_outside(path: str | os.PathLike, inputs: Iterable[str | os.PathLike],
                  what: str) -> Path:
    """Refuse a folder labelclean writes into (``what``: ``--cache``,
    ``tensorboard_dir``) that is or lies inside an input (a folder, a CSV's folder,
    an image tree): :func:`overlapped_input`, ``replaced=False``. Returns it resolved."""
    src = overlapped_input(path, inputs, replaced=False)
    if src is not None:
        raise LabelcleanError(f"{what} {path} lies inside the input {src}; put it elsewhere")
    return Path(path).resolve()


def check_overlap(out: str | os.PathLike, inputs: Iterable[str | os.PathLike],
                  what: str = "--out") -> None:
    """Refuse an ``out`` that is, contains or lies inside an input folder, or a
    CSV input's folder (``what`` names ``out`` in the message):
    :func:`overlapped_input`, ``replaced=True``."""
    src = overlapped_input(out, inputs, replaced=True)
    if src is not None:
        raise LabelcleanError(
            f"{what} {Path(out).resolve()} overlaps the input {src}; choose another folder")


def privacy_strip(paths: Iterable[str | os.PathLike]) -> int:
    """The permission bits outputs of ``paths`` (input files and folders) must
    not have: ``0o070`` when one of them is not group-readable, ``0o007`` when
    one is not world-readable (both: ``0o077``)."""
    strip = 0
    for p in paths:
        try:
            mode = os.stat(p).st_mode
        except OSError:
            continue  # gone or unreadable: the reader says so
        if not mode & stat.S_IRGRP:
            strip |= 0o070
        if not mode & stat.S_IROTH:
            strip |= 0o007
        if strip == 0o077:
            break
    return strip


def restrict_tree(folder: str | os.PathLike, strip: int) -> None:
    """Remove the ``strip`` permission bits from ``folder`` and everything in it
    (symlinks are left alone: their own mode means nothing)."""
    if not strip:
        return
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in (*dirnames, *filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & strip:
                os.chmod(p, stat.S_IMODE(st.st_mode) & ~strip)
    os.chmod(folder, stat.S_IMODE(os.stat(folder).st_mode) & ~strip)


#: The longest file name (in bytes) labelclean makes: POSIX filesystems' NAME_MAX.
NAME_MAX = 255


def fit_name(name: str, tag: str = "", limit: int = NAME_MAX) -> str:
    """``name`` with ``tag`` put before its extension (``a.png``, ``.previous`` ->
    ``a.previous.png``), its stem shortened when the result would be longer than
    ``limit`` bytes: then the stem keeps its start and gets ``~<hash>`` of the
    whole name, so two long names never shorten to the same one."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f"{tag}.{ext}" if ext else tag
    candidate = stem + suffix
    if len(os.fsencode(candidate)) <= limit:
        return candidate
    import hashlib

    mark = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:10]
    room = limit - len(os.fsencode(mark + suffix))
    if room < 1:  # an extension as long as a name: keep it out
        suffix, room = tag, limit - len(os.fsencode(mark + tag))
    short = os.fsencode(stem)[:room].decode("utf-8", "ignore") if room > 0 else ""
    return short + mark + suffix
