"""Small synthetic image sets that ship with the install (no download).

:func:`make_shapes` draws coloured shapes on noisy, coloured backgrounds: an
RGB set unlike MNIST (colour carries no class information, position and size
vary), small enough for a CPU and hard enough that a model must learn before
its losses mean anything. It backs the demo, the tests and the dataset zoo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: Class names of :func:`make_shapes`, in label order.
SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "bar", "dots")


def _mask(shape: str, size: int, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = yy - cy, xx - cx
    # rotate the frame so squares, crosses and bars are not axis-aligned only
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == "triangle":
        # apex up, base down: inside when below both slanted edges and above the base
        return (v <= 0.7 * r) & (v >= -r + 1.7 * np.abs(u))
    if shape == "cross":
        w = 0.3 * r
        return ((np.abs(u) <= w) & (np.abs(v) <= r)) | ((np.abs(v) <= w) & (np.abs(u) <= r))
    if shape == "ring":
        d2 = dx**2 + dy**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "bar":
        return (np.abs(u) <= r) & (np.abs(v) <= 0.25 * r)
    if shape == "dots":
        o = 0.55 * r
        d = 0.32 * r
        return ((u - o) ** 2 + v**2 <= d**2) | ((u + o) ** 2 + v**2 <= d**2) | (
            u**2 + (v - o) ** 2 <= d**2
        )
    raise ValueError(f"unknown shape {shape!r}")


def make_shapes(
    n_per_class: int = 200, num_classes: int = 5, size: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images (N, size, size, 3) uint8, labels (N,), class names)``, shuffled.

    Each image is one shape (class) in a random colour, at a random position,
    size and angle, on a background of a random colour with pixel noise.
    """
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 2..{len(SHAPES)}")
    rng = np.random.default_rng(seed)
    classes = list(SHAPES[:num_classes])
    n = n_per_class * num_classes
    labels = rng.permutation(np.repeat(np.arange(num_classes), n_per_class))
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, k in enumerate(labels):
        bg = rng.uniform(0, 255, 3)
        fg = rng.uniform(0, 255, 3)
        while np.abs(fg - bg).sum() < 150:  # keep the shape visible
            fg = rng.uniform(0, 255, 3)
        r = rng.uniform(0.22, 0.36) * size
        cy, cx = rng.uniform(r, size - r, 2)
        m = _mask(classes[k], size, cy, cx, r, rng.uniform(0, np.pi / 2))
        img = np.where(m[..., None], fg, bg) + rng.normal(0, 28, (size, size, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64), classes


def write_image_folder(
    root: str | Path, images: np.ndarray, labels: np.ndarray, classes: list[str]
) -> list[str]:
    """Write ``root/<class>/<index>.png``; return the relative paths in input order."""
    root = Path(root)
    paths = []
    for i, (img, k) in enumerate(zip(images, labels)):
        rel = f"{classes[int(k)]}/{i:05d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L" if img.ndim == 2 else "RGB").save(root / rel)
        paths.append(rel)
    return paths
