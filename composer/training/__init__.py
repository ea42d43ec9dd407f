"""Training experts: contrastive divergence with a replay buffer, denoising score matching.

``train(recipe)`` trains a network of ``composer.nets`` on data from a TOML recipe and exports
``OUTPUT/expert.safetensors``; ``expert_from_checkpoint`` / ``family_from_checkpoint`` turn
such a file back into experts that compose with every other::

    >>> result = train("eight.toml")                                        # doctest: +SKIP
    >>> eight = expert_from_checkpoint("runs/eight/expert.safetensors")     # doctest: +SKIP
    >>> colors = family_from_checkpoint("runs/color")  # {"red": Energy, ...}  # doctest: +SKIP

Modules: ``config`` (recipes), ``data`` (sources, batches), ``objectives`` (cd, dsm), ``trainer``,
``checkpoint`` (safetensors + JSON, atomic writes), ``distributed`` (torchrun/DDP), ``guards``.
"""

from composer.training.checkpoint import (
    concept_from_checkpoint,
    expert_from_checkpoint,
    family_from_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from composer.training.config import ConfigError, TrainConfig, config_from_dict, load_config
from composer.training.guards import TrainingDivergedError
from composer.training.trainer import Trainer, TrainResult, train

__all__ = [
    "ConfigError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "concept_from_checkpoint",
    "config_from_dict",
    "expert_from_checkpoint",
    "family_from_checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "read_metadata",
    "save_checkpoint",
    "train",
]
