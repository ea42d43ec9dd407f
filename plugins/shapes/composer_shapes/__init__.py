"""composer-shapes: the shapes world for composer (data, splits, evaluation classifier).

Images are 3x32x32 RGB in [0, 1] with one anti-aliased object on black, described by four
attributes (``ATTRIBUTES``): shape, color, size, position. The (shape, color) pairs in
``HELDOUT_PAIRS`` never occur in the ``train`` split. The plugin (``composer_shapes.plugin``)
registers the dataset ``shapes``; ``composer_shapes.classifier`` is the independent judge used by the
evaluation.

Example:
    >>> from composer_shapes import generate, HELDOUT_PAIRS
    >>> d = generate(4, split="train", seed=0)
    >>> d["x"].shape, d["x"].dtype.name, sorted(d)
    ((4, 3, 32, 32), 'float32', ['color', 'position', 'shape', 'size', 'x'])
"""

from composer_shapes.data import HELDOUT_PAIRS, SPLITS, combinations, generate, is_heldout, load
from composer_shapes.world import ATTRIBUTES, IMAGE_SHAPE, ShapesError, render

__version__ = "0.1.0"

__all__ = [
    "ATTRIBUTES",
    "HELDOUT_PAIRS",
    "IMAGE_SHAPE",
    "SPLITS",
    "ShapesError",
    "combinations",
    "generate",
    "is_heldout",
    "load",
    "render",
]
