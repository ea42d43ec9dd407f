"""The shapes world: one anti-aliased coloured object on a black 3x32x32 canvas.

Attributes (the index of a value is its position in the list)::

    shape    circle, square, triangle
    color    red, green, blue, yellow
    size     small, large
    position top_left, top_right, bottom_left, bottom_right

Geometry, in pixels on a canvas whose pixel ``(row i, column j)`` has its centre at
``(y, x) = (i + 0.5, j + 0.5)``: an object has a "radius" ``r`` (small: 4-5 px, large: 7.75-8.75 px);
a circle has radius ``r``, a square half-side ``0.9 r``, a triangle (pointing up) half-width
``1.15 r`` and half-height ``r`` (nearly equilateral), centred on its bounding box. The centre lies
in the named quadrant, at least 3 px from the midlines, and the object stays 1 px inside the canvas.
Colours are the saturated primaries (yellow = red + green) times a brightness in [0.8, 1].

Edges are anti-aliased by analytic coverage: a pixel's value is its colour times its coverage,
``clip(0.5 - d, 0, 1)`` for ``d`` the signed distance (px) from the pixel centre to an edge (a
one-pixel linear ramp across the edge), multiplied over a polygon's edges.
Everything is vectorised in numpy (10k images in ~0.4 s on one core).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import composer

ATTRIBUTES: dict[str, list[str]] = {
    "shape": ["circle", "square", "triangle"],
    "color": ["red", "green", "blue", "yellow"],
    "size": ["small", "large"],
    "position": ["top_left", "top_right", "bottom_left", "bottom_right"],
}

#: image shape (channels, height, width)
IMAGE_SHAPE = (3, 32, 32)
#: RGB of each colour at full brightness, in the order of ``ATTRIBUTES["color"]``
COLOR_RGB = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=np.float32)
#: range of the object's radius r (px) per size
RADIUS = {"small": (4.0, 5.0), "large": (7.75, 8.75)}
#: range of the colour's brightness factor
BRIGHTNESS = (0.8, 1.0)
#: half-extent (x, y) of each shape in units of r, in the order of ``ATTRIBUTES["shape"]``
EXTENT = np.array([[1.0, 1.0], [0.9, 0.9], [1.15, 1.0]])
#: the centre stays at least this far (px) from the midlines, and objects this far inside the canvas
MIDLINE_MARGIN, EDGE_MARGIN = 3.0, 1.0

# outline kinds understood by ``coverage``: the world's three shapes, then off-world outlines
# (used only to teach the evaluation classifier what is *not* a circle, square or triangle)
KINDS = ("circle", "square", "triangle", "ellipse", "diamond", "triangle_down", "superellipse")

_PIX = np.arange(32, dtype=np.float32) + 0.5


class ShapesError(composer.ComposerError, ValueError):
    """Bad input to the shapes world (an unknown value, split, or a bad count)."""


def value_index(attribute: str, value: str | int) -> int:
    """The index of ``value`` (a name or an index) in ``ATTRIBUTES[attribute]``."""
    names = ATTRIBUTES[attribute]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if not 0 <= int(value) < len(names):
            raise ShapesError(f"{attribute} index {value} out of range 0..{len(names) - 1}")
        return int(value)
    if value not in names:
        raise ShapesError(f"unknown {attribute} '{value}'; values: {', '.join(names)}")
    return names.index(value)


def coverage(kind: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, aspect: np.ndarray | None = None,
             power: np.ndarray | None = None) -> np.ndarray:
    """Anti-aliased coverage masks of outlines.

    Args:
        kind: (N,) int indices into ``KINDS``.
        cx, cy: (N,) centres in px (x to the right, y down).
        r: (N,) radius parameter in px (see the module docstring).
        aspect: (N,) x/y stretch of an ellipse (default 1).
        power: (N,) exponent of a superellipse ``|x|^p + |y|^p = r^p`` (default 4).

    Returns:
        (N, 32, 32) float32 coverage in [0, 1].
    """
    n = len(kind)
    aspect = np.ones(n) if aspect is None else np.asarray(aspect, dtype=np.float64)
    power = np.full(n, 4.0) if power is None else np.asarray(power, dtype=np.float64)
    dx = (_PIX[None, None, :] - np.asarray(cx, np.float32)[:, None, None]).astype(np.float32)  # (N, 1, 32)
    dy = (_PIX[None, :, None] - np.asarray(cy, np.float32)[:, None, None]).astype(np.float32)  # (N, 32, 1)
    r = np.asarray(r, np.float32)[:, None, None]
    out = np.empty((n, 32, 32), dtype=np.float32)
    for k, name in enumerate(KINDS):
        rows = np.flatnonzero(kind == k)
        if rows.size:
            out[rows] = _coverage(name, dx[rows], dy[rows], r[rows], aspect[rows], power[rows])
    return out


def _ramp(d: np.ndarray) -> np.ndarray:
    """Coverage of a pixel whose centre lies at signed distance ``d`` (px, negative inside) from an edge."""
    return np.clip(0.5 - d, 0.0, 1.0)


def _coverage(name: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray, aspect: np.ndarray,
              power: np.ndarray) -> np.ndarray:
    """Coverage (M, 32, 32) of one kind of outline; ``dx`` (M, 1, 32), ``dy`` (M, 32, 1) from the centre.

    Curved outlines use the ramp of their signed distance; polygons multiply the ramps of their edges'
    half-planes, which is exact box-filter coverage for a square's axis-aligned edges and corners; a
    triangle also multiplies the ramps of its bounding box, so that nothing leaks past its corners, and
    is within ~0.11 of exact coverage at the corners (the max of the edge distances is off by ~0.3).
    """
    ax, ay = np.abs(dx), np.abs(dy)
    if name == "circle":
        return _ramp(np.sqrt(dx**2 + dy**2) - r)
    if name == "square":
        s = EXTENT[1, 0] * r
        return _ramp(ax - s) * _ramp(ay - s)
    if name in ("triangle", "triangle_down"):
        w, h = EXTENT[2, 0] * r, EXTENT[2, 1] * r
        y = dy if name == "triangle" else -dy
        norm = np.sqrt(4 * h**2 + w**2)
        edges = _ramp(y - h) * _ramp((dx * 2 * h - (y + h) * w) / norm) * _ramp((-dx * 2 * h - (y + h) * w) / norm)
        return edges * _ramp(-y - h) * _ramp(ax - w)  # + the bounding box: no coverage beyond the corners
    if name == "ellipse":  # semi-axes r*sqrt(a), r/sqrt(a); distance scaled by the gradient norm
        a = np.sqrt(aspect)[:, None, None].astype(np.float32)
        f = np.sqrt((dx / a) ** 2 + (dy * a) ** 2)
        grad = np.sqrt((dx / a**2) ** 2 + (dy * a**2) ** 2) / np.maximum(f, 1e-6)
        return _ramp((f - r) / np.maximum(grad, 1e-6))
    if name == "diamond":  # a square rotated by 45 degrees, same area as the world's square
        s = EXTENT[1, 0] * r
        u, v = (dx + dy) / np.sqrt(2.0), (dx - dy) / np.sqrt(2.0)
        return _ramp(np.abs(u) - s) * _ramp(np.abs(v) - s)
    if name == "superellipse":  # between a circle (p = 2) and a square (p -> inf)
        p = power[:, None, None].astype(np.float32)
        scale = np.maximum(ax, ay) + 1e-6
        return _ramp(scale * ((ax / scale) ** p + (ay / scale) ** p) ** (1 / p) - 0.95 * r)
    raise ShapesError(f"unknown outline kind '{name}'")


def layout(shape: np.ndarray, size: np.ndarray, position: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, ...]:
    """Radius and centre of objects from their attributes and uniform jitter.

    Args:
        shape, size, position: (N,) int value indices.
        u: (N, 3) uniforms in [0, 1): radius, x and y jitter.

    Returns:
        ``(r, cx, cy)``, each (N,) float64 in px.
    """
    r = radius(size, u[:, 0])
    cx, cy = centres(EXTENT[shape, 0] * r, EXTENT[shape, 1] * r, position, u[:, 1], u[:, 2])
    return r, cx, cy


def radius(size: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Radius (px) of objects of ``size`` (N,) from uniforms ``u`` (N,): (N,) float64."""
    lo = np.where(size == 0, RADIUS["small"][0], RADIUS["large"][0])
    hi = np.where(size == 0, RADIUS["small"][1], RADIUS["large"][1])
    return lo + (hi - lo) * u


def centres(ex: np.ndarray, ey: np.ndarray, position: np.ndarray, ux: np.ndarray,
            uy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres (px) in the quadrant ``position`` (N,) of objects with half-extents ``ex``, ``ey`` (N,).

    Along each axis the centre is uniform (by ``ux``, ``uy``) between ``EDGE_MARGIN`` px from the
    canvas edge (counting the extent) and ``MIDLINE_MARGIN`` px from the midline.
    """
    out = []
    for extent, uniform, high_half in ((ex, ux, position % 2 == 1), (ey, uy, position >= 2)):
        lo = np.maximum(extent + EDGE_MARGIN, 5.5)
        c = lo + (16.0 - MIDLINE_MARGIN - lo) * uniform
        out.append(np.where(high_half, 32.0 - c, c))  # right / bottom halves mirror the left / top
    return out[0], out[1]


def paint(mask: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Images from coverage masks (N, 32, 32) and colours (N, 3): (N, 3, 32, 32) float32 in [0, 1]."""
    return np.ascontiguousarray(mask[:, None, :, :] * rgb[:, :, None, None].astype(np.float32), dtype=np.float32)


def render_batch(shape: np.ndarray, color: np.ndarray, size: np.ndarray, position: np.ndarray,
                 u: np.ndarray) -> np.ndarray:
    """Render objects from attribute indices and jitter.

    Args:
        shape, color, size, position: (N,) int value indices.
        u: (N, 4) uniforms in [0, 1): radius, x, y and brightness jitter.

    Returns:
        (N, 3, 32, 32) float32 images in [0, 1].
    """
    shape, color, size, position = (np.asarray(a, dtype=np.int64) for a in (shape, color, size, position))
    u = np.asarray(u, dtype=np.float64)
    r, cx, cy = layout(shape, size, position, u[:, :3])
    brightness = BRIGHTNESS[0] + (BRIGHTNESS[1] - BRIGHTNESS[0]) * u[:, 3]
    return paint(coverage(shape, cx, cy, r), COLOR_RGB[color] * brightness[:, None])


def render(shape: str | int, color: str | int, size: str | int, position: str | int, seed: int = 0) -> np.ndarray:
    """One image of the named object, its jitter drawn from ``seed``: (3, 32, 32) float32 in [0, 1].

    Example:
        >>> render("triangle", "red", "large", "top_left", seed=1).shape
        (3, 32, 32)
    """
    idx = [np.array([value_index(a, v)]) for a, v in zip(ATTRIBUTES, (shape, color, size, position))]
    u = np.random.default_rng(seed).random((1, 4))
    return render_batch(*idx, u)[0]


def as_indices(values: Sequence[str | int], attribute: str) -> np.ndarray:
    """Value names or indices of ``attribute`` as an int64 array."""
    return np.array([value_index(attribute, v) for v in values], dtype=np.int64)
