"""The gallery's data: every flagged sample, most suspicious first, with a small
thumbnail for images (:func:`gallery_data`); the page embeds it as JSON and the
script (``static/gallery.js``) renders one page of it at a time."""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .run import RunFiles

#: Every flagged sample is in the gallery; at most this many get a thumbnail.
MAX_THUMBNAILS = 50_000
#: Thumbnails stop after this many seconds (the rest of the gallery has none).
THUMBNAIL_SECONDS = 60.0
THUMBNAIL_CHUNK = 256
#: Colour thumbnails are quantised to this many colours: PNG of photos stays small.
THUMB_COLOURS = 128


def image_locator(run: dict) -> Callable[[str], Path | None]:
    """Map a sample id (the ``path`` column) to its original image file.

    ``"folder"`` inputs: ``source/<path>``; ``"paths"`` inputs: the CSV's folder
    joined with the path unless it is absolute. Other inputs have no images.
    """
    inp = run.get("input", {})
    source, origin = Path(inp.get("source", ".")), inp.get("origin")
    if inp.get("kind") != "images":
        return lambda sample_id: None
    if origin == "folder":
        return lambda sample_id: source / sample_id
    if origin in ("paths", "dataframe"):
        base = source.parent if origin == "paths" else source  # a DataFrame's root
        return lambda sample_id: Path(sample_id) if os.path.isabs(sample_id) else base / sample_id
    return lambda sample_id: None


def thumbnail_side(n: int) -> int:
    """Thumbnail side in pixels: smaller as the gallery grows, to bound the page size."""
    return 64 if n <= 2_000 else 48 if n <= 10_000 else 32


def thumbnail(path: Path | None, side: int) -> str | None:
    """A base64 PNG of ``path`` shrunk to fit ``side`` x ``side``; None if unreadable."""
    from PIL import Image

    from ..sources import to_l_or_rgb

    if path is None:
        return None
    try:
        with Image.open(path) as im:
            im.draft(None, (side, side))  # JPEG: decode at reduced scale, much faster
            if im.mode in ("P", "1"):
                im = im.convert("RGBA")  # palette images resize poorly (nearest only)
            # Shrink first: the mode conversion then touches side x side pixels, not millions.
            im.thumbnail((side, side), Image.Resampling.BILINEAR)
            im = to_l_or_rgb(im)
            if im.mode == "RGB":
                im = im.quantize(THUMB_COLOURS, method=Image.Quantize.FASTOCTREE)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _file_uri(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.resolve().as_uri()
    except ValueError:
        return None


def gallery_data(run: RunFiles) -> dict:
    """Everything the gallery script needs, as JSON-ready data.

    Returns ``{"kind", "fields", "items", "classes", "thumb_side", "thumbs_omitted"}``;
    each item is a list in ``fields`` order: rank, sample id, given label,
    predicted label, predicted probability, p_noisy, loss, base64 PNG thumbnail
    (or None), link to the original file (or None), the run's suspicion
    ``score`` (None for runs whose scores.csv has none). Items are in rank
    order: most suspicious first.
    """
    flagged = run.flagged
    kind = run.run.get("input", {}).get("kind", "images")
    locate = image_locator(run.run)
    side = thumbnail_side(len(flagged))
    files = [locate(s) for s in flagged["sample_id"]]
    thumbs: list[str | None] = [None] * len(files)
    attempted = 0
    if kind == "images":
        thumbs, attempted = make_thumbnails(files, side)
    has_score = "score" in flagged.columns
    scores = flagged["score"] if has_score else [None] * len(flagged)
    # a row whose model agrees with its label at t_c shows the class it was
    # ranked below on average (its suggested label), not the given label twice
    shown = flagged["suggested_label"] if "suggested_label" in flagged else flagged[
        "predicted_label"]
    items = [
        [int(rank), sid, given, pred, round(float(prob), 4), round(float(p), 4),
         round(float(loss), 4), th, _file_uri(f), None if sc is None else round(float(sc), 4)]
        for rank, sid, given, pred, prob, p, loss, th, f, sc in zip(
            flagged["rank"], flagged["sample_id"], flagged["given_label"],
            shown, flagged["predicted_prob"], flagged["p_noisy"],
            flagged["loss"], thumbs, files, scores, strict=True,
        )
    ]
    return {
        "kind": kind,
        "fields": ["rank", "id", "given", "predicted", "prob", "p_noisy", "loss", "thumb", "href",
                   "score"],
        "has_score": has_score,
        "items": items,
        "classes": run.classes,
        "thumb_side": side,
        "thumbs_omitted": len(files) - attempted if kind == "images" else 0,
    }


def make_thumbnails(
    files: list[Path | None], side: int, limit: int = MAX_THUMBNAILS,
    budget_s: float = THUMBNAIL_SECONDS,
) -> tuple[list[str | None], int]:
    """Thumbnails of ``files`` in order, until ``limit`` files or ``budget_s`` seconds.

    The budget keeps a report of tens of thousands of large photos from
    delaying every export by minutes; the most suspicious samples come first,
    so they are the ones that get thumbnails. Returns the thumbnails (None
    where missing, unreadable or not attempted) and how many files were tried.
    """
    thumbs: list[str | None] = [None] * len(files)
    started = time.perf_counter()
    done = 0
    # PIL releases the GIL while decoding and encoding: threads do help.
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        while done < min(limit, len(files)) and time.perf_counter() - started < budget_s:
            chunk = files[done : min(limit, done + THUMBNAIL_CHUNK)]
            thumbs[done : done + len(chunk)] = pool.map(lambda f: thumbnail(f, side), chunk)
            done += len(chunk)
    return thumbs, done
