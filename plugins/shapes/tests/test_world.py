"""The shapes world: rendering, determinism, value ranges and the held-out split."""

from __future__ import annotations

import numpy as np
import pytest
from composer_shapes import ATTRIBUTES, HELDOUT_PAIRS, SPLITS, ShapesError, combinations, generate, is_heldout, render
from composer_shapes.world import COLOR_RGB, EXTENT, coverage

import composer


@pytest.fixture(scope="module")
def train() -> dict[str, np.ndarray]:
    return generate(3000, "train", seed=0)


def test_same_seed_same_arrays_and_prefix_stable():
    a, b = generate(64, "train", seed=7), generate(64, "train", seed=7)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    small = generate(10, "train", seed=7)
    for k in a:
        np.testing.assert_array_equal(small[k], a[k][:10])
    other = generate(64, "train", seed=8)
    assert not np.array_equal(a["x"], other["x"])


def test_shapes_dtypes_and_ranges(train):
    x = train["x"]
    assert x.shape == (3000, 3, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    assert x.min() >= 0.0 and x.max() <= 1.0
    for attribute, values in ATTRIBUTES.items():
        y = train[attribute]
        assert y.shape == (3000,) and y.dtype == np.int64
        assert y.min() >= 0 and y.max() < len(values)
    empty = generate(0, "all")
    assert empty["x"].shape == (0, 3, 32, 32) and empty["shape"].shape == (0,)


def test_object_inside_canvas_on_black(train):
    x = train["x"]
    border = np.concatenate([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], axis=-1)
    assert border.max() == 0.0  # the object keeps >= 1 px from every edge, so the outer ring is black
    assert (x.max(axis=(1, 2, 3)) >= 0.8 - 1e-6).all()  # every image has a fully covered, bright pixel


def test_colours_are_the_named_primaries(train):
    x, color = train["x"], train["color"]
    on = COLOR_RGB[color] > 0  # (N, 3) channels that carry the colour
    assert x.transpose(1, 0, 2, 3)[~on.T].max() == 0.0  # off channels are exactly zero
    yellow = color == ATTRIBUTES["color"].index("yellow")
    np.testing.assert_array_equal(x[yellow, 0], x[yellow, 1])  # yellow: red == green
    brightness = x.max(axis=(1, 2, 3))
    assert brightness.min() >= 0.8 - 1e-6 and brightness.max() <= 1.0


def test_position_and_size_match_labels(train):
    x, pos, size = train["x"], train["position"], train["size"]
    mask = x.max(axis=1)  # (N, 32, 32): coverage times brightness
    on = mask > 0
    cols, rows = np.arange(32) + 0.5, np.arange(32) + 0.5
    col_any, row_any = on.any(axis=1), on.any(axis=2)
    cx = np.array([(cols[c].min() + cols[c].max()) / 2 for c in col_any])
    cy = np.array([(rows[r].min() + rows[r].max()) / 2 for r in row_any])
    # bounding-box centres lie >= 3 px from the midlines; the pixel grid moves them by <= 1 px
    assert ((cx > 16) == (pos % 2 == 1)).all() and ((cy > 16) == (pos >= 2)).all()
    area = mask.sum(axis=(1, 2)) / mask.max(axis=(1, 2))
    # largest small object: square r=5 (81 px^2); smallest large: triangle r=7.75 (138 px^2)
    assert area[size == 0].max() < 90 and area[size == 1].min() > 125


def test_anti_aliased_edges(train):
    cov = train["x"].max(axis=1) / train["x"].max(axis=(1, 2, 3))[:, None, None]
    partial = ((cov > 0.05) & (cov < 0.95)).sum(axis=(1, 2))
    assert (partial >= 8).all()  # every outline has a ring of partially covered pixels


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_coverage_matches_supersampling(kind):
    """Analytic coverage vs a 16x16-supersampled reference: per pixel within 0.12, area within 1.5%."""
    rng = np.random.default_rng(kind)
    n, s = 12, 16
    cx, cy, r = rng.uniform(10, 22, n), rng.uniform(10, 22, n), rng.uniform(4, 8.75, n)
    cov = coverage(np.full(n, kind), cx, cy, r)
    p = (np.arange(32 * s) + 0.5) / s
    for i in range(n):
        dx, dy = p[None, :] - cx[i], p[:, None] - cy[i]
        if kind == 0:
            inside = dx**2 + dy**2 <= r[i] ** 2
        elif kind == 1:
            inside = np.maximum(abs(dx), abs(dy)) <= EXTENT[1, 0] * r[i]
        else:
            w, h = EXTENT[2, 0] * r[i], EXTENT[2, 1] * r[i]
            inside = (dy <= h) & (abs(dx) * 2 * h - (dy + h) * w <= 0)
        ref = inside.reshape(32, s, 32, s).mean(axis=(1, 3))
        assert abs(cov[i] - ref).max() < 0.12
        assert abs(cov[i].sum() / ref.sum() - 1) < 0.015


def test_splits_hold_out_exactly_the_pairs(train):
    assert len(combinations("train")) == 72 and len(combinations("heldout")) == 24 and len(combinations("all")) == 96
    assert not is_heldout(train["shape"], train["color"]).any()
    for attribute, values in ATTRIBUTES.items():
        assert set(train[attribute].tolist()) == set(range(len(values)))  # every single value is trained
    seen_pairs = set(zip(train["shape"].tolist(), train["color"].tolist()))
    assert len(seen_pairs) == 12 - len(HELDOUT_PAIRS)
    held = generate(500, "heldout", seed=0)
    assert is_heldout(held["shape"], held["color"]).all()
    names = {(ATTRIBUTES["shape"][s], ATTRIBUTES["color"][c]) for s, c in zip(held["shape"], held["color"])}
    assert names == set(HELDOUT_PAIRS)
    share = is_heldout(*(generate(4000, "all", seed=0)[a] for a in ("shape", "color"))).mean()
    assert abs(share - 0.25) < 0.03  # 24 of 96 combinations; 3 sigma of a binomial share at n=4000 is 0.02


def test_bad_input_is_a_composer_error():
    with pytest.raises(composer.ComposerError, match="train, heldout, all"):
        generate(4, "test")
    with pytest.raises(ShapesError, match="non-negative"):
        generate(-1)
    with pytest.raises(ShapesError, match="values: circle, square, triangle"):
        render("hexagon", "red", "small", "top_left")
    assert SPLITS == ("train", "heldout", "all")


def test_render_single_image():
    x = render("triangle", "red", "large", "bottom_right", seed=3)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    np.testing.assert_array_equal(x, render(2, 0, 1, 3, seed=3))
    assert x[1:].max() == 0.0 and x[0].max() >= 0.8 - 1e-6  # red only
    ys, xs = np.nonzero(x[0])
    assert xs.mean() > 16 and ys.mean() > 16
