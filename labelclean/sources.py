"""Image files into a :class:`~labelclean.dataset.Dataset`: decoding and the decode cache.

Every input format whose samples are image files reads them here
(:func:`load_images`: an image folder, a CSV or DataFrame of paths through
:func:`load_path_csv`); Python objects holding images decode them with
:func:`decode_image`, so the same picture gives the same pixels whatever it was
read from.

Images are decoded once, in parallel, into one ``uint8`` tensor of shape
``(N, C, H, W)``; training then slices batches out of it instead of touching
PIL again, which keeps the per-step cost the model's. Grayscale, RGB, RGBA and
palette images are all accepted: if every image is grayscale the tensor has one
channel, otherwise three (alpha is composited onto white).

Nothing here writes under the input: it is only ever read. With ``cache``,
the decoded tensor is also saved to (and next time read from) a folder the
user names, outside the input, keyed by the files' paths, sizes and
modification times, so a second run over the same images skips decoding.

Images too many or too large to hold in memory (more than ``max_memory``
bytes decoded, by default a quarter of the machine's RAM) are decoded once,
streaming, into a ``uint8`` file in the cache folder and memory-mapped from
there: ``Dataset.x`` is then a tensor over that file (``Dataset.mapped``), the
operating system pages batches in, and the trainer gathers them in
``DataLoader`` workers (``Trainer(workers=...)``). Without a cache folder such
an input is refused with a message that says how much memory it needs.

This module was once every reader; the names that moved out (``Dataset``,
``load_dataset``, ``register_object_reader``, ``split_layout``, ``read_csv``...)
are re-exported below, so ``from labelclean.sources import ...`` keeps working.
Which kinds of input exist and how each is detected, read, written and applied is
:mod:`labelclean.formats`.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .dataset import CLASS_ORDER, Dataset, SourceKind
from .errors import LabelcleanError
from .folders import (
    IMAGE_EXTENSIONS,
    SPLIT_NAMES,
    TRAIN_SPLIT,
    VAL_SPLITS,
    split_layout,
    split_validation,
)
from .formats import load_dataset, register_object_reader
from .labels import (
    class_list,
    class_sort_key,
    encode_labels,
    label_name,
    natural_key,
    sorted_classes,
)
from .paths import check_outside, image_roots
from .tables import listed_images, load_feature_csv, read_csv, table_labels, table_noise

#: Names other modules, tests and scripts import from here (see the module docstring).
__all__ = [
    "CLASS_ORDER", "IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "MAX_NATIVE_SIZE",
    "MEMORY_FRACTION", "SPLIT_NAMES", "TRAIN_SPLIT", "VAL_SPLITS", "Dataset", "SourceKind",
    "cache_dir", "class_sort_key", "decode_image", "default_max_memory", "error_reason",
    "format_size", "label_name", "listed_images", "load_dataset", "load_feature_csv",
    "load_images", "load_path_csv", "read_csv", "read_image", "register_object_reader",
    "sorted_classes", "split_layout", "split_validation", "stack_images", "target_size",
    "to_l_or_rgb",
]

#: Images of more pixels than this (8192 x 8192) are unreadable files, whatever
#: their header's format: a 200-byte file can claim 30000 x 30000 pixels (a
#: "decompression bomb"). Below PIL's own warning limit, so PIL never warns
#: about an image labelclean would decode; its warning for the larger ones
#: (which labelclean refuses anyway) is silenced.
MAX_IMAGE_PIXELS = 2**26
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

#: Share of physical memory the decoded images may take before they are memory-mapped.
MEMORY_FRACTION = 0.25
#: Images decoded per chunk on the memory-mapped path (bounds the decoder's memory).
_DECODE_CHUNK = 1024

#: Images whose sides are all at most this are kept at their native size by default.
MAX_NATIVE_SIZE = 64


def load_path_csv(
    path: Path,
    table: pd.DataFrame,
    path_column: str,
    label_column: str,
    noise_column: str | None,
    image_size: int | None,
    classes: list[str] | None,
    skip_unreadable: bool,
    workers: int | None,
    cache: Path | None = None,
    max_memory: int | None = None,
    *,
    base: Path | None = None,
    origin: str = "paths",
    source: Path | None = None,
) -> Dataset:
    """Images listed in ``table``. ``path`` names the table in messages; relative
    paths resolve against ``base`` (default: ``path``'s folder); ``source`` is
    what the dataset records it came from (default: ``path``)."""
    if path_column not in table.columns:
        raise LabelcleanError(f"{path.name} has no path column {path_column!r}; pass --path-column")
    if len(table) == 0:
        raise LabelcleanError(f"{path.name} has no rows")
    labels = table_labels(table, label_column, path)
    raw = table[path_column]
    if raw.isna().any():
        row = int(np.flatnonzero(raw.isna().to_numpy())[0])
        raise LabelcleanError(f"{path.name}: empty path in data row {row + 1}")
    base = path.parent if base is None else base
    files = [(base / p) if not os.path.isabs(p) else Path(p) for p in raw.astype(str)]
    missing = [str(p) for p, f in zip(raw.astype(str), files) if not f.is_file()]
    if missing:
        raise LabelcleanError(
            f"{path.name}: {len(missing)} image paths do not exist (first: {missing[0]})"
        )
    noise = table_noise(table, noise_column, path)
    if cache is not None:
        # never inside the tree the images share (labelclean.paths), as for --out
        check_outside(cache, image_roots(files), "--cache")
    return load_images(
        files, list(labels), list(raw.astype(str)), origin, source or path, table,
        np.arange(len(table)), noise=noise, image_size=image_size, classes=classes,
        skip_unreadable=skip_unreadable, workers=workers, cache=cache, max_memory=max_memory,
    )




def load_images(
    files: list[Path],
    labels: list[str],
    ids: list[str],
    origin: str,
    source: Path,
    table: pd.DataFrame | None,
    rows: np.ndarray | None,
    *,
    noise: np.ndarray | None,
    image_size: int | None,
    classes: list[str] | None,
    skip_unreadable: bool,
    workers: int | None,
    cache: Path | None = None,
    max_memory: int | None = None,
) -> Dataset:
    """Decode ``files`` (labelled ``labels``, named ``ids``) into a :class:`Dataset` of
    ``origin`` read from ``source`` (a table's ``rows``, when it came from one); the
    keywords as :func:`labelclean.formats.load_dataset` documents them, ``cache`` the
    folder already checked by :func:`cache_dir`."""
    if image_size is not None and image_size < 8:
        raise LabelcleanError(f"--image-size must be at least 8, got {image_size}")
    threads = workers or os.cpu_count() or 1
    key = None if cache is None else _cache_key(files, image_size)
    cached = None if cache is None else _read_cache(cache / f"images-{key}.npz")
    mapped = False
    if cached is None and cache is not None:
        cached = _read_mapped(cache, key)
        mapped = cached is not None
    if cached is None:
        sizes = _probe_all(files, threads)
        w, h = target_size(sizes, image_size)
        limit = default_max_memory() if max_memory is None else int(max_memory)
        # colour is only known once decoded: budget for three channels
        need = 3 * w * h * sum(not isinstance(s, str) for s in sizes)
        if need > limit:
            if cache is None:
                raise LabelcleanError(
                    f"the decoded images need {format_size(need)}, more than the "
                    f"{format_size(limit)} "
                    "allowed in memory (--max-memory); pass --cache DIR to decode them once "
                    "to a memory-mapped file there, or a smaller --image-size"
                )
            x, keep, reasons = _decode_mapped(files, sizes, (w, h), threads, cache, key)
            mapped = True
        else:
            x, keep, reasons = _decode_all(files, sizes, (w, h), threads)
            if cache is not None:
                _write_cache(cache / f"images-{key}.npz", x, keep, reasons)
    else:
        x, keep, reasons = cached
    bad = [(ids[i], r) for i, r in enumerate(reasons) if r]
    if bad and not skip_unreadable:
        raise LabelcleanError(
            f"{len(bad)} unreadable images (first: {bad[0][0]}: {bad[0][1]}); "
            "pass --skip-unreadable to leave them out and list them in the report"
        )
    if not len(keep):
        raise LabelcleanError(f"none of the {len(files)} images in {source} could be read")
    keep = [int(i) for i in keep]
    kept_labels = [labels[i] for i in keep]
    class_names = class_list(pd.Series(kept_labels), classes, source)
    if classes is None:
        lost = sorted(set(labels) - set(kept_labels), key=natural_key)
        if lost:
            raise LabelcleanError(f"class {lost[0]!r} has no readable images")
        if len(class_names) < 2:
            raise LabelcleanError(f"{source} has a single class ({class_names[0]}); need two")
    y = encode_labels(pd.Series(kept_labels), class_names, source)
    return Dataset(
        kind="images",
        x=torch.from_numpy(x if mapped else np.ascontiguousarray(x)),
        y=y,
        classes=class_names,
        ids=[ids[i] for i in keep],
        origin=origin,
        source=source,
        files=[files[i] for i in keep],
        rows=None if rows is None else rows[keep],
        table=table,
        unreadable=pd.DataFrame({"path": [b[0] for b in bad], "reason": [b[1] for b in bad]}),
        noise_mask=None if noise is None else noise[keep],
        mapped=mapped,
        class_order=CLASS_ORDER if classes is None else "given",
    )


def default_max_memory() -> int:
    """:data:`MEMORY_FRACTION` of physical memory, in bytes (4 GiB if unknown)."""
    try:
        return int(MEMORY_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def format_size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _probe_all(files: list[Path], workers: int) -> list[tuple[int, int] | str]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_probe_size, files))


def target_size(sizes: list[tuple[int, int] | str], image_size: int | None) -> tuple[int, int]:
    """``(width, height)`` every image is decoded to (see ``load_dataset``)."""
    if image_size is not None:
        return image_size, image_size
    unique = {s for s in sizes if not isinstance(s, str)}
    if len(unique) == 1 and max(next(iter(unique))) <= MAX_NATIVE_SIZE:
        return next(iter(unique))
    return MAX_NATIVE_SIZE, MAX_NATIVE_SIZE


def _decode_all(
    files: list[Path], sizes: list[tuple[int, int] | str], target: tuple[int, int], workers: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode every file in memory: ``(x, keep, reasons)``, ``x`` holding the
    readable ones as ``(n, C, H, W)`` uint8, ``keep`` their indices,
    ``reasons[i]`` empty for a readable file and the error otherwise."""
    w, h = target
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(
            pool.map(lambda fs: _decode(fs[0], fs[1], (w, h)), zip(files, sizes))
        )
    reasons = [d if isinstance(d, str) else "" for d in decoded]
    keep = np.array([i for i, d in enumerate(decoded) if not isinstance(d, str)], dtype=np.int64)
    return stack_images([decoded[i] for i in keep], (w, h)), keep, reasons


def stack_images(arrays: list[np.ndarray], target: tuple[int, int]) -> np.ndarray:
    """Decoded images (from :func:`decode_image`) as one ``(n, C, H, W)`` uint8
    array: one channel when all are grayscale, else three."""
    w, h = target
    if not arrays:
        return np.zeros((0, 1, h, w), np.uint8)
    if all(a.ndim == 2 for a in arrays):
        x = np.stack(arrays)[:, None]
    else:
        x = np.stack([np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a for a in arrays])
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


# --------------------------------------------------------------------------- decode cache

#: Bump when the decoding itself changes, so old caches are not reused.
_CACHE_VERSION = 1


def cache_dir(cache: str | os.PathLike | None, source: Path) -> Path | None:
    """The cache folder, refused when it lies inside the input (never write there)."""
    if cache is None:
        return None
    return check_outside(cache, [source], "--cache")


def _cache_key(files: list[Path], image_size: int | None) -> str:
    h = hashlib.sha256(f"v{_CACHE_VERSION}|{image_size}".encode())
    for f in files:
        st = f.stat()
        h.update(f"|{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def _read_cache(
    path: Path, with_x: bool = True
) -> tuple[np.ndarray | None, np.ndarray, list[str]] | None:
    """``(x, keep, reasons)`` from a cache file (``x`` None without ``with_x``: the
    metadata of a memory-mapped entry), or None: a damaged one is rebuilt, not trusted."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as d:
            x = d["x"] if with_x else None
            return x, d["keep"], [str(r) for r in d["reasons"]]
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(
    path: Path, x: np.ndarray | None, keep: np.ndarray, reasons: list[str]
) -> None:
    """Write a cache file atomically (``x`` None: metadata only)."""
    from ._io import atomic_write

    arrays = {"keep": keep, "reasons": np.array(reasons, dtype=str)}
    if x is not None:
        arrays["x"] = x

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    try:
        atomic_write(path, write)
    except OSError as e:
        raise LabelcleanError(f"cannot write the image cache {path}: {e.strerror or e}") from None


def _decode_mapped(
    files: list[Path],
    sizes: list[tuple[int, int] | str],
    target: tuple[int, int],
    workers: int,
    cache: Path,
    key: str,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode every file straight into ``cache/images-<key>.u8.npy`` and map it.

    Images are decoded a chunk at a time by ``workers`` threads into a
    three-channel scratch file of this run's own (colour is only known after
    decoding; two runs filling one cache never share a scratch file), then the
    readable rows are copied to the final file, with one channel when every
    image is grayscale. Memory stays at a chunk of images whatever ``N``. Both
    files get their disk blocks up front, so a full disk is an error message
    rather than a SIGBUS in the middle of a write; the final file is renamed
    into place and the metadata, written last, marks the entry complete.
    """
    import tempfile

    from ._io import atomic_write

    w, h = target
    n = len(files)
    final = cache / f"images-{key}.u8.npy"
    reasons = [""] * n
    gray = np.ones(n, dtype=bool)
    rgb = None
    scratch = None
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".images-{key}.", suffix=".scratch.npy", dir=cache)
        os.close(fd)
        scratch = Path(name)
        rgb = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=(n, 3, h, w))
        _reserve(scratch)

        def decode_into(i: int) -> None:
            a = _decode(files[i], sizes[i], target)
            if isinstance(a, str):
                reasons[i] = a
            elif a.ndim == 2:
                rgb[i] = a  # broadcast over the three channels
            else:
                rgb[i] = a.transpose(2, 0, 1)
                gray[i] = False

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for s in range(0, n, _DECODE_CHUNK):
                list(pool.map(decode_into, range(s, min(n, s + _DECODE_CHUNK))))
        keep = np.array([i for i in range(n) if not reasons[i]], dtype=np.int64)
        channels = 1 if gray[keep].all() else 3

        def write(tmp: str) -> None:
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.uint8, shape=(len(keep), channels, h, w)
            )
            _reserve(Path(tmp))
            rows_per_copy = max(1, (64 << 20) // (3 * h * w))  # ~64 MiB at a time
            for s in range(0, len(keep), rows_per_copy):
                rows = keep[s : s + rows_per_copy]
                out[s : s + len(rows)] = rgb[rows, :channels]
            out.flush()

        atomic_write(final, write)
        _write_cache(cache / f"images-{key}.meta.npz", None, keep, reasons)
    except OSError as e:
        raise LabelcleanError(
            f"cannot write decoded images to the cache {cache}: {e.strerror or e}"
        ) from None
    finally:
        rgb = None  # unmap before the scratch file goes
        if scratch is not None:
            scratch.unlink(missing_ok=True)
    return np.load(final, mmap_mode="c"), keep, reasons


def _reserve(path: Path) -> None:
    """Allocate ``path``'s blocks now (ENOSPC becomes an OSError here, not a SIGBUS later)."""
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))


def _read_mapped(cache: Path, key: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """A complete memory-mapped cache entry, or None (a damaged one is rebuilt)."""
    meta = _read_cache(cache / f"images-{key}.meta.npz", with_x=False)
    data = cache / f"images-{key}.u8.npy"
    if meta is None or not data.is_file():
        return None
    _, keep, reasons = meta
    try:
        x = np.load(data, mmap_mode="c")
    except (OSError, ValueError):
        return None
    if x.ndim != 4 or x.dtype != np.uint8 or len(x) != len(keep):
        return None
    return x, keep, reasons


def read_image(file: str | os.PathLike, target: tuple[int, int] | None = None
               ) -> np.ndarray | str:
    """One image file as :func:`load_dataset` reads it: ``uint8`` at ``target``
    (width, height; default its own size), 2-D for grayscale, ``(H, W, 3)`` for
    colour; or, for a file that cannot be read, why (a short line). It never
    raises: whatever the decoder says about a file makes it unreadable."""
    size = _probe_size(Path(file))
    return _decode(Path(file), size, target or size)


def _probe_size(file: Path) -> tuple[int, int] | str:
    """The image's (width, height) from its header, or why it cannot be read."""
    try:
        if file.stat().st_size == 0:
            return "zero-byte file"
        with Image.open(file) as im:
            w, h = im.size
    # Every error a decoder raises on a damaged file (PIL's DecompressionBombError,
    # struct.error, IndexError, ... have no common base) makes the file unreadable.
    except Exception as e:  # noqa: BLE001
        return error_reason(e)
    if w < 1 or h < 1:
        return f"image of {w}x{h} pixels"
    if w * h > MAX_IMAGE_PIXELS:
        return (f"image of {w}x{h} pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
                "(a damaged header or a decompression bomb)")
    return w, h


def _decode(file: Path, size: tuple[int, int] | str, target: tuple[int, int]) -> np.ndarray | str:
    """Decode to ``uint8``: 2-D for grayscale, ``(H, W, 3)`` for colour."""
    if isinstance(size, str):
        return size
    try:
        with Image.open(file) as im:
            if im.size != size:  # the file changed since it was probed
                return f"image size changed from {size} to {im.size} while reading"
            im.load()
            return decode_image(im, target)
    except Exception as e:  # noqa: BLE001 - as in _probe_size
        return error_reason(e)


def decode_image(im: Image.Image, target: tuple[int, int]) -> np.ndarray:
    """A loaded PIL image as ``uint8`` at ``target`` (width, height): 2-D for
    grayscale, ``(H, W, 3)`` for colour. Every input kind decodes through here,
    so the same picture gives the same pixels whatever it was read from."""
    im = to_l_or_rgb(im)
    if im.size != target:
        im = im.resize(target, Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def to_l_or_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("1", "L", "I", "I;16", "F"):
        if im.mode in ("I", "I;16", "F"):
            arr = np.asarray(im, dtype=np.float64)
            hi = arr.max() if arr.max() > 0 else 1.0
            return Image.fromarray((arr * (255.0 / hi)).astype(np.uint8), "L")
        return im.convert("L")
    if im.mode == "LA" or im.mode == "P" and "transparency" in im.info or im.mode == "RGBA":
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    rgb = im.convert("RGB")
    arr = np.asarray(rgb)
    if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        return rgb.convert("L")
    return rgb


def error_reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, MemoryError):
        text = "out of memory while decoding"
    return text[:200]


