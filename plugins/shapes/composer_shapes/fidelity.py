"""Fidelity of generated images: the best fit of the world's own renderer, and a count of objects.

A sample is *faithful* when some in-world object — a shape, a radius in its size's range, a centre in
the allowed part of a quadrant, a world colour at a brightness in ``[0.8, 1]``, rendered by
``composer_shapes.world`` — matches it with soft IoU >= 0.95, and it shows at most one object. The soft
IoU of two images is ``sum min(x, y) / sum max(x, y)`` over every pixel and channel (the weighted
Jaccard index: 1 for identical images; a radius off by 3% costs ~0.06), counting only values above
``FLOOR = 0.1`` (faint background noise is not shape).

The fit: the colour is the world colour nearest (by angle) to the object's mean colour; the centre starts
at the object's intensity centroid (a triangle's bounding box sits ``h / 3`` above its centroid); a coarse
grid over the three shapes, the three world radii (0.25 px apart, either size) nearest to the one its
area gives, and centre offsets of +-0.5 px is refined around the best candidate twice (radius +-0.15 then
+-0.05 px, centre +-0.25 then +-0.125 px); the brightness of each candidate is its least-squares
value clipped to the world's range. Objects are the 8-connected components of at least ``MIN_PIXELS``
pixels brighter than ``THRESHOLD`` (in any channel)::

    >>> import numpy as np, torch
    >>> from composer_shapes.world import render
    >>> x = torch.from_numpy(np.stack([render("triangle", "red", "small", "top_left", seed=s) for s in range(4)]))
    >>> fit = best_fit(x)
    >>> bool((fit["iou"] > 0.95).all()), fit["shape"].tolist(), object_count(x).tolist()
    (True, [2, 2, 2, 2], [1, 1, 1, 1])
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from composer_shapes.world import BRIGHTNESS, COLOR_RGB, EDGE_MARGIN, EXTENT, MIDLINE_MARGIN, RADIUS, coverage

THRESHOLD = 0.3
FLOOR = 0.1  # values at most this are ignored by the soft IoU (background noise)
MIN_PIXELS = 3
IOU_GOAL = 0.95
_PIX = np.arange(32) + 0.5


def object_count(x: Tensor) -> Tensor:
    """``(N,)`` number of objects (8-connected bright components of >= ``MIN_PIXELS`` px) in ``x (N, 3, 32, 32)``."""
    mask = x.detach().float().amax(1) > THRESHOLD  # (N, 32, 32)
    n = mask.shape[0]
    labels = torch.where(mask, torch.arange(1, 32 * 32 + 1, dtype=torch.float32).view(1, 32, 32).expand(n, -1, -1),
                         torch.zeros(()))
    for _ in range(32 * 32):
        grown = torch.nn.functional.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0] * mask
        if torch.equal(grown, labels):
            break
        labels = grown
    counts = torch.zeros(n, dtype=torch.long)
    for i in range(n):
        values, sizes = labels[i][mask[i]].unique(return_counts=True)
        counts[i] = int((sizes >= MIN_PIXELS).sum())
    return counts


def _allowed(c: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Clip centres ``c`` into the allowed range of their half of the canvas (objects of half-extent ``extent``)."""
    lo = np.maximum(extent + EDGE_MARGIN, 5.5)
    hi = 16.0 - MIDLINE_MARGIN
    low_half = np.clip(c, lo, hi)
    high_half = np.clip(c, 32.0 - hi, 32.0 - lo)
    return np.where(c < 16.0, low_half, high_half)


def _score(x: np.ndarray, shape: np.ndarray, r: np.ndarray, cx: np.ndarray, cy: np.ndarray,
           rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft IoU ``(M,)`` and brightness ``(M,)`` of candidates against images ``x (M, 3, 32, 32)``."""
    cov = coverage(shape, cx, cy, r).astype(np.float64)  # (M, 32, 32)
    template = cov[:, None] * rgb[:, :, None, None]  # (M, 3, 32, 32)
    num = (x * template).reshape(len(x), -1).sum(1)
    den = np.maximum((template**2).reshape(len(x), -1).sum(1), 1e-9)
    b = np.clip(num / den, *BRIGHTNESS)
    y = template * b[:, None, None, None]
    x, y = np.where(x > FLOOR, x, 0.0), np.where(y > FLOOR, y, 0.0)  # faint noise is not shape
    inter = np.minimum(x, y).reshape(len(x), -1).sum(1)
    union = np.maximum(np.maximum(x, y).reshape(len(x), -1).sum(1), 1e-9)
    return inter / union, b


def best_fit(x: Tensor) -> dict[str, Tensor]:
    """The best in-world object for each image of ``x (N, 3, 32, 32)``.

    Returns:
        ``iou`` (N,), ``shape`` and ``color`` (N,) value indices, ``radius``, ``cx``, ``cy``, ``brightness`` (N,).
    """
    xs = x.detach().double().clamp(0, 1).cpu().numpy()
    n = xs.shape[0]
    out = {k: np.zeros(n) for k in ("iou", "shape", "color", "radius", "cx", "cy", "brightness")}
    offsets = np.array([-0.5, 0.0, 0.5])
    area_per_r2 = np.array([np.pi, (2 * EXTENT[1, 0]) ** 2, 2 * EXTENT[2, 0] * EXTENT[2, 1]])
    grid = np.concatenate([np.arange(RADIUS["small"][0], RADIUS["small"][1] + 1e-9, 0.25),
                           np.arange(RADIUS["large"][0], RADIUS["large"][1] + 1e-9, 0.25)])
    for i in range(n):
        img = xs[i]
        inten = img.max(0)
        if inten.max() <= THRESHOLD:
            continue
        w = np.where(inten > THRESHOLD, inten, 0.0)
        mx, my = (w.sum(0) * _PIX).sum() / w.sum(), (w.sum(1) * _PIX).sum() / w.sum()
        mean_rgb = (img * w).reshape(3, -1).sum(1)
        unit = COLOR_RGB / np.linalg.norm(COLOR_RGB, axis=1, keepdims=True)
        color = int(np.argmax(unit @ (mean_rgb / max(np.linalg.norm(mean_rgb), 1e-9))))
        rgb = COLOR_RGB[color].astype(np.float64)
        area = inten.sum() / 0.9  # the object's area at a typical brightness
        # coarse: per shape, the three world radii nearest to its area's, centre offsets of +-0.5 px
        cands = []
        for shape in range(3):
            r_est = np.sqrt(area / area_per_r2[shape])
            for r in grid[np.argsort(np.abs(grid - r_est))[:3]]:
                for dx in offsets:
                    for dy in offsets:
                        cands.append((shape, r, mx + dx, my + dy - (EXTENT[2, 1] * r / 3 if shape == 2 else 0.0)))
        s, r, cx, cy = (np.array(c) for c in zip(*cands))
        best = _search(img, s.astype(np.int64), r, cx, cy, rgb)
        # refine around the best candidate, twice
        for dr, dc in ((0.15, 0.25), (0.05, 0.125)):
            s0, r0, cx0, cy0 = best[2], best[3], best[4], best[5]
            lo, hi = RADIUS["small"] if r0 < 6 else RADIUS["large"]
            fine_r = np.clip(r0 + np.linspace(-dr, dr, 7), lo, hi)
            fine_d = np.array([-dc, 0.0, dc])
            r, dx, dy = (a.ravel() for a in np.meshgrid(fine_r, fine_d, fine_d, indexing="ij"))
            fine = _search(img, np.full(r.shape, s0), r, cx0 + dx, cy0 + dy, rgb)
            if fine[0] > best[0]:
                best = fine
        out["iou"][i], out["brightness"][i], out["shape"][i], out["radius"][i], out["cx"][i], out["cy"][i] = best
        out["color"][i] = color
    result = {k: torch.from_numpy(v) for k, v in out.items()}
    result["shape"], result["color"] = result["shape"].long(), result["color"].long()
    return result


def _search(img: np.ndarray, s: np.ndarray, r: np.ndarray, cx: np.ndarray, cy: np.ndarray,
            rgb: np.ndarray) -> tuple[float, float, int, float, float, float]:
    """Best ``(iou, brightness, shape, radius, cx, cy)`` among candidates (centres clipped into the world)."""
    ex, ey = EXTENT[s, 0] * r, EXTENT[s, 1] * r
    cx, cy = _allowed(cx, ex), _allowed(cy, ey)
    iou, b = _score(np.broadcast_to(img, (len(s), *img.shape)), s, r, cx, cy, np.broadcast_to(rgb, (len(s), 3)))
    k = int(np.argmax(iou))
    return float(iou[k]), float(b[k]), int(s[k]), float(r[k]), float(cx[k]), float(cy[k])


def fidelity(x: Tensor) -> dict[str, float]:
    """Summary over samples ``x (N, 3, 32, 32)``: share faithful (IoU >= 0.95 and at most one object),
    share with IoU >= 0.95, share with more than one object, median IoU."""
    fit = best_fit(x)
    objects = object_count(x)
    good = (fit["iou"] >= IOU_GOAL) & (objects <= 1)
    return {"faithful": float(good.double().mean()), "iou_ok": float((fit["iou"] >= IOU_GOAL).double().mean()),
            "several_objects": float((objects > 1).double().mean()), "median_iou": float(fit["iou"].median())}
