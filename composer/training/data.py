"""Training data: ``.npz``/``.npy`` arrays, image folders, generated datasets, registered datasets; batches.

Every source becomes a ``TrainingData``: float samples ``x: (N, *event_shape)``, optional value
indices ``y: (N,)`` of a concept family with their names, the sampling box and a fingerprint
(stored in checkpoints). Batches are a pure function of ``(seed, step)``, which makes resuming
exact and lets every rank of a distributed run take its slice of the same global batch.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from composer.training.config import ConfigError, DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass
class TrainingData:
    """Positive samples and what a checkpoint records about them.

    Attributes:
        x: ``(N, *event_shape)`` float samples.
        y: ``(N,)`` long value indices, or ``None`` (unconditional).
        values: names of the family's values (``None`` when unconditional).
        domain: ``(low, high)`` tensors broadcastable to ``event_shape``.
        dequantize: width of the uniform noise added to each batch.
        fingerprint: sha256 (16 hex digits) of the raw arrays.
    """

    x: Tensor
    y: Tensor | None
    values: list[str] | None
    domain: tuple[Tensor, Tensor]
    dequantize: float
    fingerprint: str

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def to(self, device: torch.device | str) -> TrainingData:
        y = None if self.y is None else self.y.to(device)
        return TrainingData(self.x.to(device), y, self.values, self.domain, self.dequantize, self.fingerprint)


# -- loaders (registered as datasets by composer.training.builtin) ------------------------------
def load_npz(path: str, key: str = "x", labels: str | None = None) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` file: ``x`` from ``key`` and, if given, ``y`` from ``labels``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if key not in arrays:
        raise ConfigError(f"{path} has no array '{key}'; arrays: {', '.join(arrays) or 'none'}")
    out = dict(arrays)
    out["x"] = arrays[key]
    if labels is not None:
        if labels not in arrays:
            raise ConfigError(f"{path} has no labels array '{labels}'; arrays: {', '.join(arrays)}")
        out["y"] = arrays[labels]
    return out


def load_npy(path: str) -> dict[str, np.ndarray]:
    """The samples of an ``.npy`` file."""
    try:
        return {"x": np.load(path, allow_pickle=False)}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def load_image_folder(path: str, image_size: int | None = None, grayscale: bool = False) -> dict[str, np.ndarray]:
    """Images of a folder as ``uint8 (N, C, H, W)``; sub-folders are the values of a concept family.

    A folder whose images sit in sub-folders ``red/``, ``green/``... yields labels ``y`` and
    ``values = ["green", "red", ...]`` (sorted), like torchvision's ``ImageFolder``.
    """
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"image folder not found: {root}")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    groups = [(d.name, sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)) for d in subdirs]
    groups = [g for g in groups if g[1]]
    if not groups:
        groups = [("", sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))]
    if not groups[0][1]:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    images, labels = [], []
    size = (image_size, image_size) if image_size else None
    for label, (_, files) in enumerate(groups):
        for f in files:
            with Image.open(f) as im:
                im = im.convert("L" if grayscale else "RGB")
                size = size or im.size
                arr = np.asarray(im.resize(size) if im.size != size else im, dtype=np.uint8)
            images.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
            labels.append(label)
    out = {"x": np.stack(images)}
    if groups[0][0]:
        out["y"] = np.asarray(labels, dtype=np.int64)
        out["values"] = np.asarray([g[0] for g in groups])
    return out


def eight_gaussians(n: int = 10000, radius: float = 2.0, std: float = 0.1, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` 2-D points from 8 equally weighted Gaussians (std ``std``) on a circle of ``radius``.

    ``y`` holds the index of each point's mode.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, size=n)
    angles = 2 * math.pi * y / 8
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return {"x": (centres + std * rng.standard_normal((n, 2))).astype(np.float32), "y": y.astype(np.int64)}


def eight_gaussian_modes(radius: float = 2.0) -> Tensor:
    """The ``(8, 2)`` centres of ``eight_gaussians``."""
    angles = 2 * math.pi * torch.arange(8) / 8
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


# -- from a recipe ------------------------------------------------------------------------------
def load_arrays(cfg: DataConfig, registry: Any = None) -> dict[str, Any]:
    """The raw arrays named by ``cfg`` (a registered dataset or a path)."""
    if cfg.dataset is not None:
        if registry is None:
            from composer.plugins import get_registry

            registry = get_registry()
        loader = registry.dataset(cfg.dataset).obj
        try:
            arrays = loader(**cfg.options)
        except TypeError as exc:
            raise ConfigError(f"dataset '{cfg.dataset}': bad options {cfg.options}: {exc}") from exc
        if not isinstance(arrays, dict) or "x" not in arrays:
            raise ConfigError(f"dataset '{cfg.dataset}' must return a dict of arrays with 'x'")
        if cfg.key != "x":
            if cfg.key not in arrays:
                raise ConfigError(f"dataset '{cfg.dataset}' has no array '{cfg.key}'")
            arrays = {**arrays, "x": arrays[cfg.key]}
        if cfg.labels is not None:
            if cfg.labels not in arrays:
                raise ConfigError(f"dataset '{cfg.dataset}' has no labels array '{cfg.labels}'")
            arrays = {**arrays, "y": arrays[cfg.labels]}
        return arrays
    path = Path(cfg.path)
    if path.is_dir() and (path / "index.json").is_file():  # a dataset folder of `composer generate`
        from composer.generation.read import load_dataset

        return load_dataset(path, cfg.key, cfg.labels)
    if path.is_dir():
        return load_image_folder(str(path), cfg.image_size, cfg.grayscale)
    if path.suffix == ".npz":
        return load_npz(str(path), cfg.key, cfg.labels)
    if path.suffix == ".npy":
        return load_npy(str(path))
    if not path.exists():
        raise ConfigError(f"data path not found: {path}")
    raise ConfigError(f"unsupported data file {path}: use .npz, .npy or a folder of images")


def prepare_data(cfg: DataConfig, registry: Any = None, arrays: dict[str, Any] | None = None,
                 conditional: bool | None = None) -> TrainingData:
    """Load, convert (8-bit -> [0, 1]) and describe the data of a recipe.

    Args:
        cfg: the ``[data]`` table.
        registry: where registered datasets are looked up (default: the process registry).
        arrays: use these arrays (``{"x": ..., "y": ...}``) instead of loading ``cfg``'s source.
        conditional: force (``True``) or ignore (``False``) labels; ``None`` uses them when
            ``cfg.labels`` is set or the source provides ``y`` together with ``cfg.values``.
    """
    arrays = load_arrays(cfg, registry) if arrays is None else arrays
    raw_x = np.asarray(arrays["x"])
    if raw_x.ndim < 2 or raw_x.shape[0] == 0:
        raise ConfigError(f"data must have shape (N, *event_shape) with N > 0, got {raw_x.shape}")
    eight_bit = raw_x.dtype == np.uint8
    x = torch.from_numpy(np.ascontiguousarray(raw_x)).float()
    if eight_bit:
        x = x / 255.0
    if not torch.isfinite(x).all():
        raise ConfigError("data contain NaN or infinite values")
    digest = hashlib.sha256(np.ascontiguousarray(raw_x).tobytes())

    use_labels = conditional
    if use_labels is None:
        use_labels = cfg.labels is not None or ("y" in arrays and (cfg.values is not None or "values" in arrays))
    y, values = None, None
    if use_labels:
        if "y" not in arrays:
            raise ConfigError("a conditional expert needs labels: set [data] labels to the array of value indices")
        raw_y = np.asarray(arrays["y"])
        if raw_y.shape != (raw_x.shape[0],) or not np.issubdtype(raw_y.dtype, np.integer):
            raise ConfigError(f"labels must be integers of shape ({raw_x.shape[0]},), got {raw_y.dtype} {raw_y.shape}")
        y = torch.from_numpy(raw_y.astype(np.int64))
        digest.update(raw_y.astype(np.int64).tobytes())
        k = int(y.max()) + 1
        if cfg.values is not None:
            values = [str(v) for v in cfg.values]
        elif "values" in arrays:
            values = [str(v) for v in np.asarray(arrays["values"]).tolist()]
        else:
            values = [f"value{i}" for i in range(k)]
        if int(y.min()) < 0 or k > len(values):
            raise ConfigError(f"labels must lie in [0, {len(values)}) (one per value), got [{int(y.min())}, {k - 1}]")
        if not all(v.isidentifier() for v in values) or len(set(values)) != len(values):
            raise ConfigError(f"values must be distinct identifiers, got {values}")

    dequantize = cfg.dequantize if cfg.dequantize is not None else (1 / 256 if eight_bit else 0.0)
    domain = _domain(cfg.domain, x, eight_bit)
    return TrainingData(x, y, values, domain, float(dequantize), digest.hexdigest()[:16])


def _domain(spec: list[Any] | None, x: Tensor, eight_bit: bool) -> tuple[Tensor, Tensor]:
    if spec is not None:
        if len(spec) != 2:
            raise ConfigError(f"domain must be [low, high], got {spec}")
        low, high = (torch.as_tensor(v, dtype=torch.float32) for v in spec)
        if torch.any(low >= high):
            raise ConfigError(f"domain low must be < high, got {spec}")
        return low, high
    if eight_bit or (x.dim() > 2 and x.min() >= 0 and x.max() <= 1):
        return torch.tensor(0.0), torch.tensor(1.0)
    if x.dim() == 2:
        lo, hi = x.amin(0), x.amax(0)
    else:
        lo, hi = x.min(), x.max()
    pad = 0.1 * (hi - lo).clamp_min(1e-3)
    return lo - pad, hi + pad


# -- batches --------------------------------------------------------------------------------------
def step_generator(seed: int, step: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator that is a pure function of ``(seed, step, stream)`` (same on every rank)."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 7919 + stream * 104_729) % (2**63 - 1))
    return g


class Batches:
    """Global batches as a pure function of the step: epoch ``e`` visits ``randperm(N)`` seeded by ``e``.

    Args:
        data: the training data (already on its device).
        batch_size: the global batch.
        seed: the recipe's seed.
        rank, world_size: this process takes rows ``[rank * b, (rank + 1) * b)`` of each global
            batch, ``b = batch_size // world_size``.
    """

    def __init__(self, data: TrainingData, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ConfigError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.local = batch_size // world_size
        self.lo = rank * self.local
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            n = self.data.x.shape[0]
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}
            self._perms[epoch] = torch.randperm(n, generator=g).to(self.data.x.device)
        return self._perms[epoch]

    def indices(self, step: int) -> Tensor:
        """Row indices ``(local_batch,)`` of this rank's slice of global batch ``step``."""
        n = self.data.x.shape[0]
        start = step * self.batch_size + self.lo
        pos = torch.arange(start, start + self.local)
        epochs = pos // n
        out = torch.empty(self.local, dtype=torch.long, device=self.data.x.device)
        for e in torch.unique(epochs).tolist():
            sel = epochs == e
            out[sel.to(out.device)] = self._perm(e)[(pos[sel] % n).to(out.device)]
        return out

    def __call__(self, step: int) -> tuple[Tensor, Tensor | None]:
        """This rank's ``(x: (b, *event_shape), y: (b,) | None)`` of batch ``step``, dequantised."""
        idx = self.indices(step)
        x = self.data.x[idx]
        if self.data.dequantize > 0:
            g = step_generator(self.seed, step, 1, x.device)
            u = torch.rand(self.batch_size, *x.shape[1:], generator=g, device=x.device, dtype=x.dtype)
            x = x + self.data.dequantize * u[self.lo:self.lo + self.local]
        y = None if self.data.y is None else self.data.y[idx]
        return x, y
