"""Off-world images: objects that are *not* what the world's vocabulary names.

They teach the evaluation classifier to say "none of these values" instead of forcing a wrong
image into the nearest class (an orange triangle is not red, a squircle is neither a circle nor a
square, an empty canvas has no shape). Each image breaks exactly one attribute (or all, for an empty
canvas); its label for a broken attribute is ``NONE_LABEL[attribute]`` (one past the last value),
the other labels are the true values.

Kinds of break (``BREAKS``):

- ``color``: hue at least 22 degrees from every world colour (orange, chartreuse, cyan, azure,
  violet, magenta, pink; the world's hues are red 0, yellow 60, green 120, blue 240; each of the
  four bands between them equally likely), or desaturated (saturation <= 0.5: white, grey, pastels);
- ``shape``: an ellipse (aspect 1.6-1.9), a diamond, a downward triangle, or (large only) a
  superellipse ``|x|^p + |y|^p = r^p`` with p in [3.5, 5];
- ``size``: radius 5.9-6.9 px, between small (<= 5) and large (>= 7.75);
- ``position``: centre within 0.75 px of a midline;
- ``empty``: a black canvas.
"""

from __future__ import annotations

import numpy as np

from composer_shapes.world import (
    ATTRIBUTES,
    BRIGHTNESS,
    COLOR_RGB,
    EXTENT,
    KINDS,
    centres,
    coverage,
    paint,
    radius,
)

NONE_LABEL = {attribute: len(values) for attribute, values in ATTRIBUTES.items()}
BREAKS = ("color", "shape", "size", "position", "empty")
#: probability of each break
BREAK_P = np.array([0.3, 0.3, 0.15, 0.15, 0.1])
#: hue intervals (degrees) of off-world colours: >= 22 degrees from 0, 60, 120 and 240
OFF_HUES = np.array([[22.0, 38.0], [82.0, 98.0], [142.0, 218.0], [262.0, 338.0]])


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """RGB (N, 3) of hue ``h`` in degrees, saturation ``s`` and value ``v`` (each (N,))."""
    k = (np.array([5.0, 3.0, 1.0])[None, :] + (h[:, None] / 60.0)) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def off_colors(n: int, rng: np.random.Generator) -> np.ndarray:
    """Colours none of red, green, blue, yellow: (n, 3) float in [0, 1] at full brightness."""
    widths = OFF_HUES[:, 1] - OFF_HUES[:, 0]
    band = rng.integers(0, len(OFF_HUES), n)  # bands equally likely: orange as often as violet
    hue = OFF_HUES[band, 0] + widths[band] * rng.random(n)
    sat = rng.uniform(0.85, 1.0, n)
    pale = rng.random(n) < 0.3  # desaturated: any hue
    hue = np.where(pale, rng.uniform(0.0, 360.0, n), hue)
    sat = np.where(pale, rng.uniform(0.0, 0.5, n), sat)
    return hsv_to_rgb(hue, sat, np.ones(n))


def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """``n`` off-world images and their labels.

    Returns:
        ``x``: (n, 3, 32, 32) float32 in [0, 1]; labels: attribute -> (n,) int64, where
        ``NONE_LABEL[attribute]`` marks "none of the values"; the break of each image: (n,) int64
        indices into ``BREAKS``.
    """
    labels = {a: rng.integers(0, len(v), n) for a, v in ATTRIBUTES.items()}
    brk = rng.choice(len(BREAKS), size=n, p=BREAK_P)
    shape, size, position = labels["shape"], labels["size"], labels["position"]
    r = radius(size, rng.random(n))
    kind = shape.copy()
    aspect, power = np.ones(n), rng.uniform(3.5, 5.0, n)
    ex, ey = EXTENT[shape, 0] * r, EXTENT[shape, 1] * r

    rows = np.flatnonzero(brk == BREAKS.index("shape"))
    off_kind = rng.choice(np.arange(3, len(KINDS)), size=rows.size)
    off_kind = np.where((off_kind == KINDS.index("superellipse")) & (size[rows] == 0), KINDS.index("diamond"),
                        off_kind)
    kind[rows] = off_kind
    a = rng.uniform(1.6, 1.9, rows.size)
    aspect[rows] = np.where(rng.random(rows.size) < 0.5, a, 1.0 / a)
    ext = {KINDS.index("ellipse"): (r[rows] * np.sqrt(aspect[rows]), r[rows] / np.sqrt(aspect[rows])),
           KINDS.index("diamond"): (EXTENT[1, 0] * np.sqrt(2.0) * r[rows],) * 2,
           KINDS.index("triangle_down"): (EXTENT[2, 0] * r[rows], EXTENT[2, 1] * r[rows]),
           KINDS.index("superellipse"): (0.95 * r[rows],) * 2}
    for k, (kx, ky) in ext.items():
        ex[rows] = np.where(off_kind == k, kx, ex[rows])
        ey[rows] = np.where(off_kind == k, ky, ey[rows])

    rows = np.flatnonzero(brk == BREAKS.index("size"))
    r[rows] = rng.uniform(5.9, 6.9, rows.size)
    ex[rows], ey[rows] = EXTENT[shape[rows], 0] * r[rows], EXTENT[shape[rows], 1] * r[rows]

    cx, cy = centres(ex, ey, position, rng.random(n), rng.random(n))
    rows = np.flatnonzero(brk == BREAKS.index("position"))
    on_x = rng.random(rows.size) < 0.5
    mid = 16.0 + rng.uniform(-0.75, 0.75, rows.size)
    cx[rows] = np.where(on_x, mid, cx[rows])
    cy[rows] = np.where(on_x, cy[rows], mid)

    rgb = COLOR_RGB[labels["color"]].astype(np.float64)
    rows = np.flatnonzero(brk == BREAKS.index("color"))
    rgb[rows] = off_colors(rows.size, rng)
    rgb *= rng.uniform(*BRIGHTNESS, n)[:, None]

    x = paint(coverage(kind, cx, cy, r, aspect, power), rgb)
    empty = brk == BREAKS.index("empty")
    x[empty] = 0.0
    for i, attribute in enumerate(("color", "shape", "size", "position")):
        labels[attribute] = np.where((brk == i) | empty, NONE_LABEL[attribute], labels[attribute]).astype(np.int64)
    return x, labels, brk
