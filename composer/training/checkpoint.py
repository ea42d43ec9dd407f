"""Checkpoints: safetensors for tensors, JSON metadata in the header, atomic writes, experts from files.

One checkpoint is one ``.safetensors`` file: the tensors (``model.*`` weights, ``ema.*``,
``optim.*``, ``buffer.*``, ``rng.*`` states as ``uint8``) and, in the header's metadata under
the key ``"composer"``, a JSON object (network config, concept values, recipe, data
fingerprint, step...). Loading reads tensors and JSON only: it never unpickles or executes
anything from the file. Writes go to a temporary file in the same folder, are flushed to disk,
then ``os.replace``-d over the target, so a kill at any moment leaves the old file or the new.

A trained file becomes an expert with no code::

    >>> eight = composer.expert_from_checkpoint("runs/eight/expert.safetensors")   # doctest: +SKIP
    >>> colors = composer.family_from_checkpoint("runs/color")  # {"red": Energy, ...} # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as _st_save
from torch import Tensor, nn

from composer.atomic import atomic_write_bytes, remove_stale_temporaries
from composer.energy import ConditionalEnergy, Energy, FunctionEnergy
from composer.errors import CheckpointError

FORMAT = "composer.checkpoint"
VERSION = 1
META_KEY = "composer"
EXPERT_FILE = "expert.safetensors"
CHECKPOINT_DIR = "checkpoints"
REQUIRED_KEYS = ("format", "version", "kind", "name", "network", "event_shape", "domain", "objective", "values", "step")
_STEP_FILE = re.compile(r"^step-(\d+)\.safetensors$")


# -- raw files ----------------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> None:
    """Atomically write ``tensors`` and the JSON ``metadata`` (``format``/``version`` are added)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {"format": FORMAT, "version": VERSION, **metadata, "sha256": tensors_digest(flat)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, _st_save(flat, metadata={META_KEY: json.dumps(meta)}))


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of CPU ``tensors`` in name order.

    Stored in the metadata, it lets ``load_checkpoint`` tell flipped bits in the tensor data from a
    model that really diverged.
    """
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k]
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The validated JSON metadata of a checkpoint file (reads the header only)."""
    path = _existing_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    return _validate_meta(path, header)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, metadata)`` of a checkpoint file, tensors on ``device``."""
    path = _existing_file(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    meta = _validate_meta(path, header)
    digest = meta.get("sha256")
    if digest is not None and digest != tensors_digest({k: v.cpu() for k, v in tensors.items()}):
        raise CheckpointError(f"{path}: tensor data does not match its checksum (the file is corrupt)")
    return tensors, meta


def header_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every tensor of a safetensors file, from its header alone (no tensor is read)."""
    path = _existing_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a .safetensors file (or use resolve_checkpoint)")
    return path


def _validate_meta(path: Path, header: dict[str, str]) -> dict[str, Any]:
    if META_KEY not in header:
        raise CheckpointError(f"{path} has no composer metadata: it was not written by `composer train`")
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: composer metadata is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: composer metadata must be a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks {', '.join(missing)}")
    if meta["format"] != FORMAT:
        raise CheckpointError(f"{path}: unknown format {meta['format']!r} (expected {FORMAT!r})")
    version = meta["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: format version must be a positive integer, got {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{path}: format version {version} is newer than this composer ({VERSION})")
    step = meta["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path}: 'step' must be a non-negative integer, got {step!r}")
    sigmas = meta.get("sigmas")
    if sigmas is not None and (not isinstance(sigmas, list) or not sigmas or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in sigmas)):
        raise CheckpointError(f"{path}: 'sigmas' must be a list of positive numbers or null, got {sigmas!r}")
    if not isinstance(meta["name"], str) or meta["objective"] not in ("cd", "dsm", "discriminative"):
        raise CheckpointError(f"{path}: 'name' must be a string and 'objective' one of cd, dsm, discriminative")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in meta["event_shape"]):
        raise CheckpointError(f"{path}: 'event_shape' must be a list of positive integers, got {meta['event_shape']!r}")
    values = meta["values"]
    if values is not None and (not isinstance(values, list) or not all(isinstance(v, str) for v in values)):
        raise CheckpointError(f"{path}: 'values' must be a list of names or null, got {values!r}")
    if not isinstance(meta["network"], dict) or not isinstance(meta["event_shape"], list):
        raise CheckpointError(f"{path}: 'network' must be an object and 'event_shape' a list")
    dom = meta["domain"]
    if dom is not None and (not isinstance(dom, list) or len(dom) != 2):
        raise CheckpointError(f"{path}: 'domain' must be [low, high] or null, got {dom!r}")
    return meta


# -- folders --------------------------------------------------------------------------------------------
def checkpoint_path(output: str | Path, step: int) -> Path:
    """Where the training checkpoint of ``step`` goes: ``OUTPUT/checkpoints/step-00000100.safetensors``."""
    return Path(output) / CHECKPOINT_DIR / f"step-{step:08d}.safetensors"


def list_checkpoints(output: str | Path) -> list[Path]:
    """Training checkpoints of an output folder, oldest first (temporary files are ignored)."""
    folder = Path(output) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output: str | Path) -> Path | None:
    """The newest readable training checkpoint of an output folder, or ``None``."""
    for p in reversed(list_checkpoints(output)):
        try:
            read_metadata(p)
            return p
        except CheckpointError:
            continue
    return None


def prune_checkpoints(output: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints and stale temporary files."""
    for p in list_checkpoints(output)[:-keep]:
        p.unlink(missing_ok=True)
    remove_stale_temporaries(Path(output) / CHECKPOINT_DIR)


def resolve_checkpoint(path: str | Path) -> Path:
    """A file as is; a training output folder -> its ``expert.safetensors``, else its latest checkpoint."""
    path = Path(path)
    if path.is_dir():
        if (path / EXPERT_FILE).is_file():
            return path / EXPERT_FILE
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"no {EXPERT_FILE} and no checkpoint in {path}")
        return latest
    return _existing_file(path)


# -- experts from files ---------------------------------------------------------------------------------
def prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``tensors`` under ``prefix + "."``, with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def load_weights(module: nn.Module, weights: dict[str, Tensor], where: str) -> None:
    """``module.load_state_dict(weights, strict=True)`` with a ``CheckpointError`` naming the mismatch."""
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not match the network config"
            + (f"; missing: {', '.join(missing[:5])}" if missing else "")
            + (f"; unexpected: {', '.join(unexpected[:5])}" if unexpected else "")
        )
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not match the network config: {exc}") from exc


def network_from_checkpoint(path: str | Path, device: torch.device | str = "cpu", ema: bool = True,
                            registry: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network (eval mode, no parameter gradients) and the metadata of a checkpoint.

    Args:
        path: a checkpoint file or a training output folder.
        device: where the weights go.
        ema: use the EMA weights when the file has them.
        registry: where a plugin's network type is looked up (default: every installed plugin).
    """
    from composer.nets import build_network

    path = resolve_checkpoint(path)
    meta = read_metadata(path)
    expected = _shapes_of(meta["network"], registry, path)  # before anything is allocated
    found = header_shapes(path)
    prefix = "ema." if ema and any(k.startswith("ema.") for k in found) else "model."
    for key, shape in expected.items():
        if prefix + key in found and found[prefix + key] != shape:
            raise CheckpointError(f"{path}: tensor '{prefix + key}' has shape {list(found[prefix + key])} but the "
                                  f"network config needs {list(shape)}")
    tensors, meta = load_checkpoint(path, device)
    net = build_network(meta["network"], registry)
    weights = prefixed(tensors, "ema") if ema and any(k.startswith("ema.") for k in tensors) else {}
    load_weights(net, weights or prefixed(tensors, "model"), str(path))
    net.to(device).eval().requires_grad_(False)
    return net, meta


def _shapes_of(config: dict[str, Any], registry: Any, path: Any) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the network ``config`` describes, built on the ``meta`` device (no memory)."""
    from composer.nets import build_network

    try:
        with torch.device("meta"):
            net = build_network(config, registry)
    except CheckpointError:
        raise
    except Exception as exc:  # a config no network accepts
        raise CheckpointError(f"{path}: network config {config!r} cannot be built: {type(exc).__name__}: {exc}") \
            from None
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _domain(meta: dict[str, Any]) -> tuple[Tensor, Tensor] | None:
    return None if meta["domain"] is None else tuple(torch.tensor(v) for v in meta["domain"])


def sampling_recipe(meta: dict[str, Any]) -> dict[str, Any] | None:
    """``composer.sample`` keyword arguments matching how a checkpoint was trained, or ``None``.

    DSM: annealed Langevin over the training ladder (``steps`` = steps per level x levels).
    CD: the training sampler's kernel, step size, noise and clip (``steps`` is left to the caller).
    """
    recipe = meta.get("recipe") or {}
    if meta["objective"] == "dsm" and meta.get("sigmas"):
        dsm = recipe.get("dsm", {})
        return {"sigmas": list(meta["sigmas"]), "steps": int(dsm.get("sample_steps", 100)) * len(meta["sigmas"]),
                "step_size": float(dsm.get("sample_step_size", 2e-5)), "noise": "exact"}
    cd = recipe.get("cd")
    if meta["objective"] == "cd" and cd:
        return {"sampler": cd["sampler"], "step_size": cd["step_size"], "noise": cd["noise"],
                "clip_grad": cd["clip_grad"] or None}
    return None


def _decorate(energy: Energy, meta: dict[str, Any]) -> Energy:
    energy.checkpoint_meta = meta
    energy.sigmas = meta.get("sigmas")  # the noise ladder of a DSM expert, for annealed sampling
    energy.sampling_recipe = sampling_recipe(meta)
    return energy


def expert_from_checkpoint(path: str | Path, value: str | None = None, device: torch.device | str = "cpu",
                           ema: bool = True, registry: Any = None) -> Energy:
    """The ``Energy`` of a trained checkpoint: an expert that composes with every other.

    Args:
        path: a ``.safetensors`` file, or a training output folder (its ``expert.safetensors``,
            else its latest checkpoint).
        value: for a concept family, the value to return (see ``family_from_checkpoint``).
        device: where the weights go.
        ema: use the EMA weights when present.
        registry: where a plugin's network type is looked up (default: every installed plugin).

    Returns:
        An ``Energy`` with ``event_shape``, ``domain``, label the recipe's name (``name=value``
        for a family value), ``checkpoint_meta`` (the metadata), ``sigmas`` (the noise ladder
        of a DSM expert, else ``None``) and ``sampling_recipe`` (``composer.sample`` keyword
        arguments matching the training, see ``sampling_recipe``).

    Raises:
        CheckpointError: missing/malformed file, or a family without (or with an unknown) ``value``.
    """
    net, meta = network_from_checkpoint(path, device, ema, registry)
    if meta["values"] is not None:
        family = family_from_network(net, meta)
        if value is None:
            raise CheckpointError(
                f"{path} is a concept family (values: {', '.join(meta['values'])}); pass value= "
                "or use family_from_checkpoint"
            )
        if value not in family:
            raise CheckpointError(f"'{value}' is not a value of {path}; values: {', '.join(meta['values'])}")
        return family[value]
    if value is not None:
        raise CheckpointError(f"{path} is an unconditional expert; it has no value '{value}'")
    return expert_from_network(net, meta)


def _noise_conditional(net: nn.Module, meta: dict[str, Any]) -> bool:
    default = meta["objective"] in ("dsm", "discriminative")
    return bool(getattr(net, "noise_conditional", meta["network"].get("noise_conditional", default)))


def expert_from_network(net: nn.Module, meta: dict[str, Any]) -> Energy:
    """The unconditional expert of a loaded network and its checkpoint metadata."""
    nc = _noise_conditional(net, meta)
    energy = FunctionEnergy(net, meta["event_shape"], _domain(meta), meta["name"], noise_conditional=nc)
    return _decorate(energy, meta)


def family_from_network(net: nn.Module, meta: dict[str, Any]) -> dict[str, Energy]:
    """``{value: ConditionalEnergy}`` of a loaded conditional network, all sharing ``net``."""
    nc = _noise_conditional(net, meta)
    out = {}
    for i, v in enumerate(meta["values"]):
        e = ConditionalEnergy(net, torch.tensor(i), meta["event_shape"], _domain(meta), f"{meta['name']}={v}", nc)
        out[v] = _decorate(e, meta)
    return out


def family_from_checkpoint(path: str | Path, device: torch.device | str = "cpu", ema: bool = True,
                           registry: Any = None) -> dict[str, Energy]:
    """One ``ConditionalEnergy`` per value of a trained concept family, all sharing one network.

    Products of these values run as one batched network call (``composer.algebra.Product``).

    Returns:
        ``{value: Energy}`` in the order of the family's values.
    """
    net, meta = network_from_checkpoint(path, device, ema, registry)
    if meta["values"] is None:
        raise CheckpointError(f"{path} is an unconditional expert, not a concept family; use expert_from_checkpoint")
    return family_from_network(net, meta)


def concept_from_checkpoint(path: str | Path, device: torch.device | str = "cpu", registry: Any = None
                            ) -> tuple[list[str], Callable[[str], Energy]]:
    """``(values, factory)`` to register a trained family with ``register_concepts``.

    Only the header is read now; the weights are loaded on the first ``factory(value)`` and the
    network is shared by every value, so products of values batch into one call. ``registry`` is where
    a plugin's network type is looked up (default: every installed plugin).
    """
    meta = read_metadata(resolve_checkpoint(path))
    if meta["values"] is None:
        raise CheckpointError(f"{path} is an unconditional expert, not a concept family")
    cache: list[tuple[nn.Module, dict[str, Any]]] = []

    def factory(value: str) -> Energy:
        if value not in meta["values"]:
            raise CheckpointError(f"'{value}' is not a value of {path}; values: {', '.join(meta['values'])}")
        if not cache:
            cache.append(network_from_checkpoint(path, device, registry=registry))
        net, full_meta = cache[0]
        return family_from_network(net, full_meta)[value]

    return list(meta["values"]), factory
