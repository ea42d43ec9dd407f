"""Training recipes: a TOML file -> dataclasses, every default documented with its source.

A recipe names the data, the network, the objective and its settings::

    name = "eight"                 # the expert's label
    objective = "cd"               # "cd" (contrastive divergence), "dsm" (denoising score matching) or
                                   # "discriminative" (cross-entropy of a family's values on noised data)
    steps = 600
    batch_size = 128
    output = "runs/eight"          # relative paths are relative to the TOML file

    [data]
    dataset = "eight_gaussians"    # a registered dataset, or: path = "points.npz"
    domain = [-3.5, 3.5]

    [network]
    type = "mlp"                   # remaining keys go to composer.nets.MLPEnergy / ConvEnergy
    hidden = [128, 128]

    [cd]
    steps = 20
    step_size = 0.01
    noise = "exact"
    clip_grad = 0.0                # 0 disables a clip

Defaults of ``[cd]`` and ``[optim]`` are the image recipe of Du & Mordatch 2019 (IGEBM) for
data in ``[0, 1]``; 2-D data needs the smaller, exact-noise steps shown above.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer.errors import ComposerError

OBJECTIVES = ("cd", "dsm", "discriminative")


class ConfigError(ComposerError):
    """A training recipe that cannot be read or is invalid."""


@dataclass
class DataConfig:
    """Where the positive samples come from (give exactly one of ``dataset`` and ``path``)."""

    dataset: str | None = None
    """A dataset registered by a plugin (``composer list`` shows them); built in: ``eight_gaussians``."""
    path: str | None = None
    """An ``.npz`` or ``.npy`` file, or a folder of images (PNG/JPEG)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the registered dataset's loader (e.g. ``{n = 10000}``)."""
    key: str = "x"
    """Array of an ``.npz`` (or loader result) holding the samples ``(N, *event_shape)``."""
    labels: str | None = None
    """Array of value indices ``(N,)`` for a concept family. Unset: a source that provides both ``y``
    and ``values`` arrays (e.g. ``half_planes``, an image folder with sub-folders) trains a family;
    anything else an unconditional expert."""
    values: list[str] | None = None
    """Names of the family's values (``labels`` index into them); default ``value0, value1, ...``
    or the loader's ``"values"`` array."""
    dequantize: float | None = None
    """Width of the uniform noise added to each positive batch. ``None``: ``1/256`` for 8-bit data
    (image folders, ``uint8`` arrays: uniform dequantisation, Theis et al. 2016, as in IGEBM), else 0."""
    domain: list[Any] | None = None
    """The box ``[low, high]`` (scalars or nested lists of ``event_shape``) for uniform initialisation
    and clamping. ``None``: ``[0, 1]`` for 8-bit data, else the data range widened by 10% per side."""
    image_size: int | None = None
    """Image folders: resize to ``image_size x image_size`` (``None``: keep the size of the first image)."""
    grayscale: bool = False
    """Image folders: one channel instead of three."""


@dataclass
class CDConfig:
    """Contrastive divergence with short-run Langevin negatives and a replay buffer (IGEBM)."""

    steps: int = 60
    """Langevin steps per iteration (IGEBM: 60)."""
    step_size: float = 10.0
    """Langevin step size, decoupled from the noise (IGEBM: 10)."""
    noise: float | str = 0.005
    """Noise std per step, or ``"exact"`` for ``sqrt(2 * step_size)`` (IGEBM: 0.005)."""
    clip_grad: float = 0.01
    """Element-wise clip of the input gradient, 0 disables it (IGEBM: 0.01)."""
    sampler: str = "langevin"
    """Kernel of the shared sampler (``langevin`` or ``mala``)."""
    buffer_size: int = 10000
    """Replay-buffer capacity, split between ranks (IGEBM: 10,000)."""
    reinit_prob: float = 0.05
    """Fraction of chains restarted from uniform noise each iteration (IGEBM: 5%)."""
    l2: float = 1.0
    """Weight of ``mean E(x+)^2 + mean E(x-)^2`` (IGEBM: alpha = 1)."""


@dataclass
class DSMConfig:
    """Denoising score matching over a geometric noise ladder (Song & Ermon 2019, NCSN). The ladder also
    gives the noise of ``objective = "discriminative"``."""

    sigma_max: float = 1.0
    """Largest noise level (NCSN: 1.0 for images in [0, 1])."""
    sigma_min: float = 0.01
    """Smallest noise level (NCSN: 0.01)."""
    num_sigmas: int = 10
    """Levels of the geometric ladder (NCSN: 10)."""
    sample_steps: int = 100
    """Annealed-Langevin steps per level when sampling (NCSN: T = 100)."""
    sample_step_size: float = 2e-5
    """Step at the smallest level; level i uses ``step * sigma_i^2 / sigma_min^2`` (NCSN: 2e-5)."""
    weighting: str = "sigma2"
    """Loss weight per noise level: ``"sigma2"`` (NCSN: ``sigma^2``, i.e. unit-scale targets), or ``"edm"``
    (Karras et al. 2022: that times ``1 + sigma^2 / sigma_data^2``, so that high noise levels, where
    the global layout of an image is decided, weigh as much as low ones)."""
    sigma_data: float = 0.5
    """The data's scale in the ``"edm"`` weighting (EDM: 0.5 for images in [-1, 1]; ~0.2-0.5 in [0, 1])."""


@dataclass
class OptimConfig:
    """Adam with IGEBM's betas, optional parameter-gradient clipping and weight EMA."""

    lr: float | None = None
    """Learning rate; ``None``: 1e-4 for ``cd`` (IGEBM), 1e-3 for ``dsm`` (NCSN)."""
    betas: list[float] | None = None
    """Adam betas; ``None``: (0, 0.999) for ``cd`` (IGEBM: no momentum, which keeps CD stable),
    (0.9, 0.999) for ``dsm`` (NCSN: plain Adam)."""
    weight_decay: float = 0.0
    """Adam weight decay (IGEBM: none)."""
    clip_grad_norm: float = 0.0
    """Clip of the parameters' gradient norm, 0 disables it (IGEBM clips; off by default)."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights, 0 disables it (Du et al. 2021: 0.999).
    With an EMA, exported experts use the averaged weights."""


@dataclass
class CheckpointConfig:
    """How often training state is saved (atomically) and how many checkpoints are kept."""

    every: int = 500
    """Steps between checkpoints; a kill loses at most this many steps."""
    keep: int = 2
    """Most recent checkpoints kept (at least 1)."""


@dataclass
class GuardConfig:
    """Stability guard: what counts as divergence and what to do about it."""

    max_energy: float = 1e4
    """Bound on ``|mean E(x+)|`` and ``|mean E(x-)|`` (contrastive divergence only: the energies of the
    other objectives have no fixed scale)."""
    max_loss: float = 1e4
    """Bound on ``|loss|``."""
    action: str = "abort"
    """``"abort"`` (raise ``TrainingDivergedError``) or ``"rollback"`` (reload the last checkpoint,
    halve the learning rate and continue)."""
    max_rollbacks: int = 3
    """Rollbacks allowed before aborting anyway."""


@dataclass
class LogConfig:
    """Progress output."""

    every: int = 10
    """Steps between updates of the progress bar and ``log.jsonl``."""
    image_every: int = 0
    """Steps between PNGs of the current negatives (``negatives-STEP.png``); 0: only at the end."""
    progress: bool = True
    """Show a tqdm progress bar."""


@dataclass
class TrainConfig:
    """A complete training recipe (see the module docstring for the TOML layout)."""

    name: str = "expert"
    """Label of the trained expert."""
    objective: str = "cd"
    """``"cd"``, ``"dsm"`` or ``"discriminative"`` (a concept family's likelihood part ``-log p(c | x~)``)."""
    steps: int = 1000
    """Optimisation steps."""
    batch_size: int = 128
    """Global batch of positives per step (split between ranks; IGEBM: 128)."""
    seed: int = 0
    """Seed of data order, noise and sampler."""
    output: str = "runs/expert"
    """Directory of checkpoints, logs, figures and the exported expert."""
    device: str = "cpu"
    """Torch device (under torchrun with CUDA, ``cuda`` means the rank's local GPU)."""
    data: DataConfig = field(default_factory=DataConfig)
    network: dict[str, Any] = field(default_factory=lambda: {"type": "mlp"})
    """``type`` (``mlp`` or ``conv``) and the constructor arguments of ``composer.nets``; the trainer
    fills in ``event_shape``, ``num_classes`` and ``noise_conditional``."""
    cd: CDConfig = field(default_factory=CDConfig)
    dsm: DSMConfig = field(default_factory=DSMConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain JSON-serialisable data (stored in checkpoints and reports)."""
        return dataclasses.asdict(self)

    def validate(self, require_source: bool = True) -> None:
        """Fill the objective-dependent defaults; raise ``ConfigError`` naming the first invalid setting.

        Args:
            require_source: the ``[data]`` table must name its source (not when arrays are given to ``train``).
        """
        _check(self.objective in OBJECTIVES,
               f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.optim.lr is None:
            self.optim.lr = 1e-4 if self.objective == "cd" else 1e-3
        if self.optim.betas is None:
            self.optim.betas = [0.0, 0.999] if self.objective == "cd" else [0.9, 0.999]
        for key in ("name", "objective", "steps", "batch_size", "seed", "output", "device"):  # set by overrides
            annotation = next(f.type for f in dataclasses.fields(self) if f.name == key)
            _check(_type_ok(getattr(self, key), annotation),
                   f"'{key}' must be {_describe_type(annotation)}, got {getattr(self, key)!r}")
        _check(0 <= self.seed < 2**63, f"seed must be in [0, 2^63), got {self.seed}")
        _check(self.steps >= 0, f"steps must be >= 0, got {self.steps}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        sources = (self.data.dataset is not None) + (self.data.path is not None)
        _check(sources == 1 or (sources == 0 and not require_source),
               "[data] needs exactly one of 'dataset' (a registered name) and 'path' (a file or folder)")
        _check(isinstance(self.network, dict) and "type" in self.network, "[network] needs a 'type' (mlp or conv)")
        _check(self.cd.steps >= 0 and self.cd.step_size > 0, "[cd] steps must be >= 0 and step_size > 0")
        _check(self.cd.noise == "exact" or (isinstance(self.cd.noise, (int, float)) and self.cd.noise >= 0),
               f"[cd] noise must be >= 0 or \"exact\", got {self.cd.noise!r}")
        _check(self.cd.buffer_size >= 1 and 0 <= self.cd.reinit_prob <= 1,
               "[cd] buffer_size must be >= 1 and reinit_prob in [0, 1]")
        _check(0 < self.dsm.sigma_min < self.dsm.sigma_max and self.dsm.num_sigmas >= 2,
               "[dsm] needs 0 < sigma_min < sigma_max and num_sigmas >= 2")
        _check(self.dsm.weighting in ("sigma2", "edm") and self.dsm.sigma_data > 0,
               f"[dsm] weighting must be 'sigma2' or 'edm' and sigma_data > 0, got {self.dsm.weighting!r}")
        _check(self.optim.lr > 0 and len(self.optim.betas) == 2, "[optim] needs lr > 0 and two betas")
        _check(0 <= self.optim.ema < 1, f"[optim] ema must be in [0, 1), got {self.optim.ema}")
        _check(self.checkpoint.every >= 1 and self.checkpoint.keep >= 1, "[checkpoint] every and keep must be >= 1")
        _check(self.guard.action in ("abort", "rollback"),
               f"[guard] action must be 'abort' or 'rollback', got {self.guard.action!r}")
        _check(self.log.every >= 1 and self.log.image_every >= 0, "[log] every must be >= 1, image_every >= 0")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


_SECTIONS = {"data": DataConfig, "cd": CDConfig, "dsm": DSMConfig, "optim": OptimConfig,
             "checkpoint": CheckpointConfig, "guard": GuardConfig, "log": LogConfig}


_KINDS: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),),
    "list[float]": (list,), "list[str]": (list,), "list[Any]": (list,), "dict[str, Any]": (dict,),
}
_ITEMS = {"list[float]": (int, float), "list[str]": (str,)}


def _type_ok(value: Any, annotation: str) -> bool:
    """Whether ``value`` fits a field annotation such as ``"float | str"`` or ``"list[float] | None"``."""
    for alt in (a.strip() for a in annotation.split("|")):
        kinds = _KINDS.get(alt)
        if kinds is None:  # an annotation this table does not know: no check
            return True
        if isinstance(value, bool) and alt in ("int", "float"):
            continue  # true/false is not a number
        if isinstance(value, kinds):
            items = _ITEMS.get(alt)
            if items is None or all(isinstance(v, items) and not isinstance(v, bool) for v in value):
                return True
    return False


def _describe_type(annotation: str) -> str:
    words = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false", "None": "unset",
             "list[float]": "a list of numbers", "list[str]": "a list of strings", "list[Any]": "a list",
             "dict[str, Any]": "a table"}
    return " or ".join(words.get(a.strip(), a.strip()) for a in annotation.split("|"))


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            from composer.registry import suggest

            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown setting '{key}' in {where}{suggest(key, fields)}; known: {known}")
        annotation = fields[key].type if isinstance(fields[key].type, str) else ""
        if annotation and not _type_ok(value, annotation):
            raise ConfigError(f"'{key}' in {where} must be {_describe_type(annotation)}, got {value!r}")
    return cls(**values)


def config_from_dict(raw: dict[str, Any], base_dir: str | Path | None = None, require_source: bool = True
                     ) -> TrainConfig:
    """Build and validate a ``TrainConfig`` from nested dicts (the parsed TOML).

    Args:
        raw: top-level settings plus the tables ``data``, ``network``, ``cd``, ``dsm``, ``optim``,
            ``checkpoint``, ``guard``, ``log``.
        base_dir: directory that relative ``data.path`` and ``output`` are resolved against
            (``None``: leave them as given).
        require_source: see ``TrainConfig.validate``.
    """
    raw = dict(raw)
    sections = {}
    for name, cls in _SECTIONS.items():
        table = raw.pop(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table, got {table!r}")
        sections[name] = _build(cls, table, f"[{name}]")
    network = raw.pop("network", {"type": "mlp"})
    if not isinstance(network, dict):
        raise ConfigError(f"[network] must be a table, got {network!r}")
    cfg = _build(TrainConfig, {**raw, "network": dict(network), **sections}, "the top level")
    if base_dir is not None:
        base = Path(base_dir)
        cfg.output = str(base / cfg.output)
        if cfg.data.path is not None:
            cfg.data.path = str(base / cfg.data.path)
    cfg.validate(require_source)
    return cfg


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML recipe; relative paths in it are relative to the file's directory."""
    from composer.tomlfile import read_toml

    path = Path(path)
    raw = read_toml(path, "TOML recipe", ConfigError)
    return config_from_dict(raw, base_dir=path.parent)
