"""Output folders that labelclean owns: marker, manifest, staging and the swap.

A folder written by ``labelclean run`` or ``labelclean apply`` is recognised by
its marker file, :data:`MARKER`, never by the name of an ordinary output such as
``run.json`` (anyone can create one of those). The marker is JSON::

    {"format": "labelclean-output", "kind": "run" | "apply", "id": "<hex>",
     "complete": true, "labelclean_version": "...",
     "files": {"<relative path>": "sha256:<hex>" | "symlink:<target>", ...}}

``files`` is the manifest: every file labelclean wrote there. ``--overwrite``
deletes only those, and only while their content is still what labelclean wrote;
anything else in the folder (a file the user added, an edited copy of an
output) is carried over into the new folder.

Writing goes through :func:`begin`, which returns a :class:`Staging`:

1. every check that can fail on the options runs first (overlap with the input,
   a folder that is not labelclean's);
2. a hidden sibling ``.<out>.labelclean-stage-<pid>-<hex>`` is created next to
   ``out`` (same parent, so same filesystem) with a marker saying
   ``complete: false``. Creating it is the writability probe, done before any
   training;
3. everything is written into the staging folder;
4. :meth:`Staging.commit` writes the manifest, then swaps: the previous output
   (if any) is renamed to ``.<out>.labelclean-old-<pid>-<hex>``, the staging
   folder renamed onto ``out``, the user's files moved over from the old
   folder, and the old folder's manifest files removed.

So until the swap, ``out`` holds the previous complete output untouched, and a
failed or killed command leaves no visible trace.

Where the rename onto ``out`` cannot work, staging happens inside ``out``
instead (:func:`staged_inside`): ``out`` a mount point (a Docker volume: the
parent is another filesystem, and a mount point cannot be renamed over), or a
writable ``out`` in a parent that is not. The hidden ``.labelclean-stage-*``,
``.labelclean-old-*`` and ``.labelclean-lock`` are then inside ``out``, and the
commit moves the previous output's entries into the old folder and the new
ones out of the staging folder (the marker last, so a complete marker means a
complete output; :func:`recover` undoes or finishes a killed one). An ``out``
that is a symlink to a folder is followed: the swap happens at its target, and
the link keeps pointing at the new output.

``out`` is owned from :func:`begin` to :meth:`Staging.commit`: an exclusive
``flock`` on the hidden lock file ``.<out>.labelclean-lock`` beside it (released
by the kernel when the process dies, so a killed command never leaves a stale
lock). A second command on the same ``out`` fails at once, in one line. The
overwrite decision is taken again at commit: an ``out`` that became non-empty
meanwhile (by other means than labelclean) is not replaced without
``--overwrite``, nor ever when it holds no labelclean output of this kind. Whatever a killed command
left beside ``out`` is put right by the next command on that ``out``
(:func:`recover`): a stale staging folder is removed, an interrupted swap is
either undone (the previous output is renamed back) or finished.

Resuming: while a run trains, its state after each epoch is kept in the staging
folder's :data:`RESUME_DIR` (:mod:`labelclean.resume`), which
:meth:`Staging.commit` removes just before the manifest is written. ``begin(...,
resume=True)`` adopts the staging folder a killed run left (instead of removing
it): it is renamed to this process's name and emptied of everything but the
marker and the saved state, so the run continues and then writes its outputs
afresh.

Reading a run folder back is the job of :mod:`labelclean.runfiles`
(:func:`~labelclean.runfiles.read_run`): the one reader that the report,
``labelclean apply`` and the tests use.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ._io import write_json
from ._version import __version__
from .errors import LabelcleanError
from .paths import check_overlap, fit_name, privacy_strip, restrict_tree

MARKER = ".labelclean-run"
FORMAT = "labelclean-output"
#: What a folder of each kind is called in messages ("holds no labelclean run").
KINDS = {"run": "labelclean run", "apply": "labelclean output", "demo": "labelclean demo",
         "bench": "labelclean bench"}
# One place for the names of a run folder's files (labelclean.export writes them,
# labelclean.runfiles reads them).
RUN_FILE = "run.json"
SCORES_FILE = "scores.csv"
REVIEW_FILE = "flagged_samples.csv"
METRICS_FILE = "metrics.csv"
LOSSES_FILE = "losses.npy"
MARGINS_FILE = "margins.npy"
PRED_PROBS_FILE = "pred_probs.npy"
EMBEDDINGS_FILE = "embeddings.npy"
UNREADABLE_FILE = "unreadable.csv"
CHECKPOINT_DIR = "checkpoint"
#: The cleaned dataset: an image tree, or a table for any other input (labelclean.writers).
CLEANED_DIR = "cleaned"
CLEANED_TABLE = "cleaned.csv"
#: Files whose content ``report`` and ``apply`` rely on: checked against the
#: manifest before use (flagged_samples.csv is meant to be edited, so it is not).
INTEGRITY_FILES = (RUN_FILE, SCORES_FILE, METRICS_FILE, LOSSES_FILE, MARGINS_FILE,
                   PRED_PROBS_FILE, EMBEDDINGS_FILE, UNREADABLE_FILE,
                   f"{CHECKPOINT_DIR}/model.json")
_STAGE, _OLD, _LOCK = "stage", "old", "lock"
#: OS errors that mean "the disk is full": named with the folder being written.
_FULL = (errno.ENOSPC, errno.EDQUOT)
#: The staging folder's sub-folder holding a run's resume state (never committed).
RESUME_DIR = "resume"


# ----------------------------------------------------------------------------- marker


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of a folder labelclean wrote, or None (absent, unreadable, or not ours)."""
    path = Path(folder) / MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        return None
    if not isinstance(marker.get("files", {}), dict):
        return None
    return marker


def fingerprint(path: Path) -> str:
    """What the manifest records for one file: its sha256, or a symlink's target."""
    if path.is_symlink():
        return f"symlink:{os.readlink(path)}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def manifest_of(folder: Path) -> dict[str, str]:
    """Fingerprint every file under ``folder`` except the marker."""
    files = {}
    for path in sorted(_walk_files(folder)):
        rel = path.relative_to(folder).as_posix()
        if rel != MARKER:
            files[rel] = fingerprint(path)
    return files


def update_manifest(folder: str | os.PathLike, paths: Iterable[str]) -> None:
    """Record (or, when gone, forget) the files ``paths`` that labelclean just
    rewrote in a finished output folder, such as a rebuilt report."""
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is None:
        return  # not a folder labelclean manages (an old run): nothing to keep current
    files = dict(marker.get("files", {}))
    for rel in paths:
        path = folder / rel
        if path.is_file() or path.is_symlink():
            files[rel] = fingerprint(path)
        else:
            files.pop(rel, None)
    write_json(folder / MARKER, {**marker, "files": files})


def verify(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Raise :class:`LabelcleanError` when one of ``names`` differs from what
    labelclean wrote (per the folder's manifest). Folders without a marker (runs
    written before it existed, hand-made fixtures) are not checked."""
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is None:
        return  # (a staging folder's marker has no manifest yet: nothing to compare)
    files = marker.get("files", {})
    for name in names:
        recorded = files.get(name)
        if recorded is None:
            continue
        path = folder / name
        if not (path.is_file() or path.is_symlink()):
            continue  # readers say for themselves whether they can do without it
        if fingerprint(path) != recorded:
            raise LabelcleanError(
                f"{path} was changed after labelclean wrote it (checksum mismatch); "
                "rerun to get a consistent folder"
            )


# ----------------------------------------------------------------------------- staging


@dataclass
class Staging:
    """A hidden folder beside ``out`` that becomes ``out`` on :meth:`commit`."""

    out: Path
    path: Path
    kind: str
    id: str
    created: list[Path] = field(default_factory=list)  # parents of out labelclean made
    #: Adopted from a killed run (``begin(resume=True)``): a failure keeps it, and
    #: its saved state, for the next ``--resume`` (a mistyped option must not cost
    #: the hours already trained).
    resumed: bool = False
    #: Whether ``--overwrite`` was given: checked again at :meth:`commit`.
    overwrite: bool = False
    #: The lock on ``out`` (:class:`OutLock`), held until commit or abort.
    lock: OutLock | None = None
    #: Permission bits the output may not have (:meth:`private_to`).
    strip: int = 0
    #: The staging folder is inside ``out`` (:func:`staged_inside`).
    inside: bool = False

    def private_to(self, inputs: Iterable[str | os.PathLike]) -> None:
        """Make the output no more readable than the most private of ``inputs``
        (files and folders read), from :meth:`commit` on (labelclean.paths)."""
        self.strip |= privacy_strip(inputs)

    @property
    def state_dir(self) -> Path:
        """Where the run keeps its resume state until :meth:`commit`."""
        return self.path / RESUME_DIR

    def commit(self) -> Path:
        """Write the manifest, then put the staging folder in place of ``out``."""
        # The state is dropped first: killed between the two, a resume starts
        # over, whereas a committed state would be a stray file in the output.
        shutil.rmtree(self.state_dir, ignore_errors=True)
        restrict_tree(self.path, self.strip)
        marker = _marker(self.kind, self.id, complete=True, files=manifest_of(self.path))
        write_json(self.path / MARKER, marker)
        restrict_tree(self.path / MARKER, self.strip)
        # The decision taken in begin() is taken again: `out` may have been
        # filled meanwhile by something that does not take the lock.
        if self.out.exists() and not self.out.is_dir():
            raise LabelcleanError(f"--out {self.out} appeared meanwhile and is not a folder; "
                                  "nothing was replaced")
        try:
            check_replaceable(self.out, kind=self.kind, overwrite=self.overwrite)
        except LabelcleanError as e:
            raise LabelcleanError(f"{e} (it was filled while this command ran; nothing was "
                                  "replaced)") from None
        if self.inside:
            self._swap_inside()
        elif self.out.is_dir() and _content(self.out):
            old = _sibling(self.out, _OLD)
            _rename(self.out, old)
            _rename(self.path, self.out)
            _retire(old, self.out)
        else:
            # absent, or an empty folder the user made: renaming onto it replaces it
            _rename(self.path, self.out)
        self.created.clear()
        self.release()
        return self.out

    def _swap_inside(self) -> None:
        """The commit of a staging folder inside ``out``: the previous entries
        into an old folder inside ``out``, the new ones out of the staging folder
        (the marker last), then the old folder retired."""
        out, old = self.out, None
        previous = _content(out)
        if previous:
            old = _sibling(out, _OLD, inside=True)
            old.mkdir()
            for entry in previous:
                _rename(entry, old / entry.name)
        for entry in sorted(self.path.iterdir()):
            if entry.name != MARKER:
                _rename(entry, out / entry.name)
        _rename(self.path / MARKER, out / MARKER)
        self.path.rmdir()
        if self.strip:
            os.chmod(out, stat.S_IMODE(out.stat().st_mode) & ~self.strip)
        if old is not None:
            _retire(old, out)

    def release(self) -> None:
        """Let other commands have ``out`` (done by :meth:`commit` and :meth:`abort`)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def abort(self) -> None:
        """Remove the staging folder and any parent folders this command created
        (a resumed staging folder stays, for the next resume)."""
        if self.resumed:
            self.release()
            return
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        self.release()
        _unmake(self.created)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            if isinstance(exc, OSError) and exc.errno in _FULL:
                # the file named by the OS may be the input being copied: say
                # which folder was being written
                raise LabelcleanError(
                    f"{exc.strerror or 'No space left on device'} while writing --out "
                    f"{self.out} (in {self.path.parent}); nothing was replaced"
                ) from None


def begin(
    out: str | os.PathLike,
    *,
    kind: str,
    overwrite: bool,
    inputs: Iterable[str | os.PathLike] = (),
    resume: bool = False,
) -> Staging:
    """Check ``out`` and open a staging folder beside it (see the module docstring).

    With ``resume``, the staging folder a killed command of this ``kind`` left
    beside ``out`` with a saved state in it is taken over (its state kept, its
    other files removed); without one, a new staging folder is opened as usual.

    Raises :class:`LabelcleanError` when ``out`` overlaps one of ``inputs``,
    is not empty without ``overwrite``, or is not empty and holds no
    labelclean output of this ``kind`` (nothing is deleted then); an
    :class:`OSError` when the place is not writable.
    """
    out = _normal(out)
    check_overlap(out, inputs)
    if out.exists() and not out.is_dir():
        raise LabelcleanError(f"--out {out} exists and is not a folder")
    created = _make_parents(out.parent)
    inside = staged_inside(out)
    try:
        lock = OutLock.acquire(out, inside)
    except BaseException:
        _unmake(created)
        raise
    try:
        left = resumable(out, kind) if resume else None
        recover(out, keep=left)
        # after recovery: a killed swap may have left `out` half-moved until now
        check_replaceable(out, kind=kind, overwrite=overwrite)
    except BaseException:
        lock.release()
        _unmake(created)
        raise
    run_id = uuid.uuid4().hex
    if left is not None:
        run_id = (read_marker(left) or {}).get("id", run_id)
    path = _sibling(out, _STAGE, run_id[:8], inside)
    try:
        if left is not None:
            _rename(left, path)  # under this process's id: recover() now leaves it alone
            _empty_but_state(path)
        else:
            path.mkdir()
        write_json(path / MARKER, _marker(kind, run_id, complete=False, files={}))
        if out.is_dir():
            _probe(out)  # the swap must be able to move the user's files out of it
    except BaseException:
        Staging(out, path, kind, run_id, created, lock=lock).abort()
        raise
    return Staging(out, path, kind, run_id, created, resumed=left is not None,
                   overwrite=overwrite, lock=lock, inside=inside)


def check_replaceable(out: Path, *, kind: str, overwrite: bool) -> None:
    """May a new output of ``kind`` take the place of whatever is at ``out``?"""
    if not out.is_dir() or not _content(out):
        return
    if not overwrite:
        raise LabelcleanError(f"--out {out} is not empty; pass --overwrite to replace it")
    marker = read_marker(out)
    if marker is None:
        raise LabelcleanError(
            f"--out {out} is not empty and holds no {KINDS[kind]} (no {MARKER} marker); "
            "refusing to delete it"
        )
    if marker.get("kind") != kind:
        raise LabelcleanError(
            f"--out {out} holds what `labelclean {marker.get('kind')}` wrote, not "
            f"`labelclean {kind}`; choose another folder"
        )


# ----------------------------------------------------------------------------- recovery


def recover(out: Path, keep: Path | None = None) -> None:
    """Put right what a killed labelclean left beside ``out``.

    An interrupted swap is undone when ``out`` is gone (the previous output is
    renamed back) and finished when the new output is in place; a staging
    folder is removed, except ``keep`` (one about to be resumed). Folders of a
    labelclean process still running are left alone.
    """
    if not out.parent.is_dir():
        return
    for role in (_OLD, _STAGE):
        for sibling in sorted(out.parent.glob(f".{_escape(out.name)}.labelclean-{role}-*")):
            if not sibling.is_dir() or sibling.is_symlink():
                continue
            if _owner_alive(sibling) or read_marker(sibling) is None or sibling == keep:
                continue
            if role == _STAGE:
                shutil.rmtree(sibling)  # only labelclean ever wrote into it
            elif not out.exists():
                _rename(sibling, out)
            elif read_marker(out) is not None:
                _retire(sibling, out)
    if not out.is_dir():
        return
    for old in sorted(out.glob(f".labelclean-{_OLD}-*")):  # a swap inside `out`
        if not old.is_dir() or old.is_symlink() or _owner_alive(old):
            continue
        if (read_marker(out) or {}).get("complete"):
            _retire(old, out)  # the new output is whole: finish
        else:
            _undo_inside(out, old)
    for staging in sorted(out.glob(f".labelclean-{_STAGE}-*")):
        if (staging.is_dir() and not staging.is_symlink() and not _owner_alive(staging)
                and read_marker(staging) is not None and staging != keep):
            shutil.rmtree(staging)


def _undo_inside(out: Path, old: Path) -> None:
    """Undo a swap inside ``out`` killed before the new marker was in place: the
    new entries back into their staging folder, the previous ones back."""
    stages = [s for s in out.glob(f".labelclean-{_STAGE}-*")
              if s.is_dir() and not _owner_alive(s) and read_marker(s) is not None]
    names = {rel.split("/")[0] for s in stages for rel in read_marker(s).get("files", {})}
    for entry in _content(out):
        # moved out of the staging folder already (a name still in it is the
        # previous output's, not yet moved aside)
        if stages and entry.name in names and not (stages[0] / entry.name).exists():
            _rename(entry, stages[0] / entry.name)
    for entry in sorted(old.iterdir()):
        _carry(entry, out / entry.name)
    old.rmdir()


def resumable(out: str | os.PathLike, kind: str = "run") -> Path | None:
    """The staging folder a killed command of ``kind`` left beside ``out`` with a
    saved state (the most recently saved one), or None."""
    from .resume import STATE_FILE

    out = _normal(out)
    found = []
    inside = list(out.glob(f".labelclean-{_STAGE}-*")) if out.is_dir() else []
    for sibling in [*out.parent.glob(f".{_escape(out.name)}.labelclean-{_STAGE}-*"), *inside]:
        marker = read_marker(sibling)
        state = sibling / RESUME_DIR / STATE_FILE
        if (marker is not None and marker.get("kind") == kind and not marker.get("complete")
                and not _owner_alive(sibling) and state.is_file()):
            found.append((state.stat().st_mtime_ns, sibling))
    return max(found)[1] if found else None


def _empty_but_state(staging: Path) -> None:
    """Remove what a killed command had begun to write into its staging folder
    (outputs are rewritten afresh), keeping the marker and the saved state."""
    for child in staging.iterdir():
        if child.name in (MARKER, RESUME_DIR):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def stale_siblings(out: str | os.PathLike) -> list[Path]:
    """Hidden staging/old folders beside (or inside) ``out`` (for tests and diagnostics)."""
    out = _normal(out)
    inside = [p for p in out.glob(".labelclean-*") if p.name.startswith(
        (f".labelclean-{_STAGE}-", f".labelclean-{_OLD}-"))] if out.is_dir() else []
    return sorted([*(p for p in out.parent.glob(f".{_escape(out.name)}.labelclean-*")
                     if p.name != f".{out.name}.labelclean-{_LOCK}"), *inside])


# ----------------------------------------------------------------------------- helpers


def _marker(kind: str, run_id: str, *, complete: bool, files: dict) -> dict:
    return {
        "format": FORMAT,
        "kind": kind,
        "id": run_id,
        "complete": complete,
        "labelclean_version": __version__,
        "files": files,
    }


def _sibling(out: Path, role: str, tag: str | None = None, inside: bool = False) -> Path:
    # The pid tells a later command whether the owner still runs.
    tag = tag or uuid.uuid4().hex[:8]
    if inside:
        return out / f".labelclean-{role}-{os.getpid()}-{tag}"
    return out.parent / f".{out.name}.labelclean-{role}-{os.getpid()}-{tag}"


def _normal(out: str | os.PathLike) -> Path:
    """``out`` made absolute with the links above it resolved; a symlink to a
    folder is followed (the swap must happen where the folder is)."""
    out = Path(out).absolute()
    out = out.parent.resolve() / out.name
    if out.is_symlink() and out.is_dir():
        out = out.resolve()
    return out


def staged_inside(out: Path) -> bool:
    """Whether ``out``'s staging folder (and lock) must live inside it: an existing
    ``out`` that is a mount point or on another filesystem than its parent (a
    rename onto it fails), or whose parent is not writable."""
    if not out.is_dir():
        return False
    try:
        return (os.path.ismount(out) or out.stat().st_dev != out.parent.stat().st_dev
                or not os.access(out.parent, os.W_OK))
    except OSError:
        return False


def _ours_inside(name: str) -> bool:
    """A name labelclean keeps inside an ``out`` while it works (not content)."""
    return name == f".labelclean-{_LOCK}" or name.startswith(
        (f".labelclean-{_STAGE}-", f".labelclean-{_OLD}-", ".labelclean-probe-"))


def _content(out: Path) -> list[Path]:
    """``out``'s entries, less what labelclean keeps there while it works."""
    return sorted(p for p in out.iterdir() if not _ours_inside(p.name))


def _owner_alive(sibling: Path) -> bool:
    try:
        pid = int(sibling.name.rsplit("-", 2)[-2])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _rename(src: Path, dst: Path) -> None:
    # One function so that tests can stop a process between the swap's renames.
    os.replace(src, dst)


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``, returning the folders that did not exist (outermost first)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    missing.reverse()
    for i, f in enumerate(missing):
        try:
            f.mkdir()
        except BaseException:
            for made in reversed(missing[:i]):
                made.rmdir()
            raise
    return missing


def _unmake(created: list[Path]) -> None:
    """Remove the (empty) parent folders a command made, innermost first; empties ``created``."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break  # someone put something there: it is theirs now
    created.clear()


class OutLock:
    """An exclusive lock on an ``out`` folder: ``flock`` on ``.<out>.labelclean-lock``
    beside it. The kernel drops it when the holder dies; the holder removes the
    file when it lets go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, out: Path, inside: bool = False) -> OutLock:
        """Take the lock on ``out`` (a file beside it, or inside it when it is
        staged inside), or raise :class:`LabelcleanError` at once when another
        command holds it."""
        import fcntl

        path = (out / f".labelclean-{_LOCK}" if inside
                else out.parent / f".{out.name}.labelclean-{_LOCK}")
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise LabelcleanError(
                    f"--out {out} is in use by another labelclean command (pid {holder}); "
                    "wait for it to finish, or choose another folder") from None
            except BaseException:
                os.close(fd)
                raise
            # the previous holder may have removed the file between our open and lock
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return cls(path, fd)
            os.close(fd)

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)  # still holding it: nobody else has this file
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = -1


def _probe(folder: Path) -> None:
    probe = folder / f".labelclean-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(probe, "x"):
        pass
    probe.unlink()


def _walk_files(folder: Path) -> Iterable[Path]:
    """Every file and symlink under ``folder``, not following links into folders."""
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for name in filenames:
            yield base / name
        for name in list(dirnames):
            if (base / name).is_symlink():
                dirnames.remove(name)
                yield base / name


def clear(folder: str | os.PathLike) -> None:
    """Delete, in place, the files of ``folder``'s manifest that are still as
    labelclean wrote them, then the marker; everything else stays. For outputs
    rewritten in place (the demo) rather than swapped."""
    folder = Path(folder)
    _remove_ours(folder, folder, None, read_marker(folder) or {})
    (folder / MARKER).unlink(missing_ok=True)


def mark(folder: str | os.PathLike, kind: str, *, complete: bool,
         files: Iterable[str] = ()) -> None:
    """Write ``folder``'s marker with a manifest of ``files`` (relative paths)."""
    folder = Path(folder)
    manifest = {rel: fingerprint(folder / rel) for rel in sorted(files)}
    write_json(folder / MARKER, _marker(kind, uuid.uuid4().hex, complete=complete,
                                        files=manifest))


def _retire(old: Path, new: Path) -> None:
    """Empty a replaced output: the user's files (and labelclean's, if edited
    since) move to ``new``; labelclean's untouched files are deleted."""
    _remove_ours(old, old, new, read_marker(old) or {})
    (old / MARKER).unlink(missing_ok=True)
    try:
        old.rmdir()
    except OSError:
        pass  # cannot happen unless a file appeared meanwhile: leave it, never delete it


def _remove_ours(root: Path, folder: Path, new: Path | None, marker: dict) -> None:
    """Delete under ``folder`` the manifest files still as written; move every
    other file and folder to the same place under ``new`` (None: leave them)."""
    files = marker.get("files", {})
    ours_dirs = {p for rel in files for p in Path(rel).parents if str(p) != "."}
    for child in sorted(folder.iterdir()):
        rel = child.relative_to(root)
        key = rel.as_posix()
        if key == MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            if rel in ours_dirs:
                _remove_ours(root, child, new, marker)
                try:
                    child.rmdir()
                except OSError:
                    pass  # the user's files are still in it
            elif new is not None:
                _carry(child, new / rel, new)  # a folder the user made
        elif key in files and fingerprint(child) == files[key]:
            child.unlink()
        elif new is not None:
            _carry(child, new / rel, new)


#: Where :func:`_carry` records the user's files it had to rename (relative to
#: the output folder): ``original,now``, one row per file, appended.
RENAMED_FILE = "renamed_by_labelclean.csv"


def _carry(src: Path, dst: Path, root: Path | None = None) -> None:
    """Move the user's ``src`` to ``dst``, or beside it when the new output has that
    name (``x.previous.png``; shortened to the filesystem's name limit when needed,
    the new name recorded in :data:`RENAMED_FILE` under ``root``)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    target, k, shortened = dst, 1, False
    while target.exists() or target.is_symlink():
        tag = ".previous" if k == 1 else f".previous-{k}"
        target = dst.with_name(fit_name(dst.name, tag))
        shortened = target.name != fit_name(dst.name, tag, limit=1 << 30)
        k += 1
    os.rename(src, target)
    if root is not None and shortened:
        _record_rename(root, dst.relative_to(root), target.relative_to(root))


def _record_rename(root: Path, original: Path, now: Path) -> None:
    import csv

    log = root / RENAMED_FILE
    new = not log.exists()
    with open(log, "a", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["original", "now"])
        writer.writerow([original.as_posix(), now.as_posix()])
