"""composer: a plugin-based engine for compositional energy-based models in PyTorch.

Experts are ``Energy`` modules (``forward(x) -> (B,)``) registered by plugins; they compose
with ``&`` (product), ``|`` (mixture), ``~`` (negation), ``w *`` (weight) and ``.on(view)``
(scope), and one shared Langevin sampler (``composer.sample``) draws from the result.
"""

from composer.algebra import Mixture, Negation, Product, Scaled, Scoped, calibrate, describe, mixture, product
from composer.compositions import load_compositions, read_definitions
from composer.energy import ConditionalEnergy, Energy, FunctionEnergy, NoiseGuidance, as_energy
from composer.errors import (
    CheckpointError,
    ComposerError,
    CompositionError,
    CompositionSyntaxError,
    DuplicateNameError,
    PluginError,
    SamplingDivergedError,
    UnknownNameError,
)
from composer.generation import generate
from composer.hookspecs import hookimpl
from composer.language import parse, parse_ast
from composer.plugins import get_registry
from composer.sampling import ReplayBuffer, SampleResult, sample
from composer.sampling.strata import Strata
from composer.training import concept_from_checkpoint, expert_from_checkpoint, family_from_checkpoint, train

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ComposerError",
    "CompositionError",
    "CompositionSyntaxError",
    "ConditionalEnergy",
    "DuplicateNameError",
    "Energy",
    "FunctionEnergy",
    "Mixture",
    "Negation",
    "NoiseGuidance",
    "PluginError",
    "Product",
    "SamplingDivergedError",
    "Scaled",
    "Scoped",
    "calibrate",
    "ReplayBuffer",
    "SampleResult",
    "UnknownNameError",
    "as_energy",
    "concept_from_checkpoint",
    "expert_from_checkpoint",
    "family_from_checkpoint",
    "generate",
    "describe",
    "get_registry",
    "hookimpl",
    "load_compositions",
    "parse",
    "parse_ast",
    "read_definitions",
    "sample",
    "Strata",
    "train",
    "mixture",
    "product",
]
