"""composer-toy: analytic experts for composer (``toy.gaussian``, ``toy.mixture``, ``toy.ring``,
``toy.moons``, ``toy.box``, ``toy.halfspace``, ``toy.student_t``).

A plugin written exactly as a third party would write one: it depends only on the public
``composer`` package and registers through the ``composer`` entry-point group (see
``composer_toy.plugin``). The classes can also be used directly from Python.
"""

from composer_toy._params import ToyParameterError
from composer_toy.experts import EXPERTS, Box, Gaussian, GaussianMixture, Halfspace, Moons, Ring, StudentT

__version__ = "0.1.0"

__all__ = [
    "EXPERTS",
    "Box",
    "Gaussian",
    "GaussianMixture",
    "Halfspace",
    "Moons",
    "Ring",
    "StudentT",
    "ToyParameterError",
]
