"""``generate``: make (or resume) a sharded dataset of samples of a plan, in one process or under torchrun.

Under ``torchrun`` (``WORLD_SIZE`` > 1) rank ``r`` of ``W`` makes the shards ``i`` with ``i % W == r`` on
its own device (``cuda:LOCAL_RANK`` when ``device`` is ``cuda``; gloo on CPU); after a barrier rank 0
writes the complete ``index.json``. Because shard ``i`` is a pure function of ``(plan, options, seed, i)``
(``composer.generation.shards``), one run, a resumed run and a run over any number of ranks write the
same bytes (on one kind of device, torch build and thread setting).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from composer.atomic import atomic_write_bytes, remove_stale_temporaries
from composer.errors import ComposerError
from composer.generation.manifest import (
    FORMAT,
    DatasetError,
    check_identity,
    prepare_folder,
    problem,
    read_index,
    read_record,
    record_path,
    versions,
    write_index,
    write_record,
)
from composer.generation.plan import Plan, PlanError, plan_from_expr, read_plan
from composer.generation.shards import SHARD_NAME, npz_bytes, num_shards, segment_seed, segments, sha256, shard_count
from composer.sampling.schedules import geometric_ladder

#: sampler options ``generate`` passes on to ``composer.sample`` (``None``: the experts' recipe)
SAMPLER_OPTIONS = ("steps", "sampler", "step_size", "noise", "temperature")


@dataclass
class GenerationResult:
    """What ``generate`` returns.

    Attributes:
        folder: the dataset folder.
        index: the content of ``index.json`` (on rank 0; the started index on other ranks).
        made: shards this process made.
        skipped: shards this process found done and verified.
        seconds: wall time of this process's work.
        rank, world_size: this process's place in a torchrun run (0, 1 alone).
    """

    folder: Path
    index: dict[str, Any]
    made: list[int]
    skipped: list[int]
    seconds: float
    rank: int = 0
    world_size: int = 1


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def sampler_kwargs(energy: Any, options: dict[str, Any], levels: int | None,
                   steps_per_level: int | None) -> dict[str, Any]:
    """The ``composer.sample`` arguments of one composition: the given options, and the budget.

    ``levels`` re-spaces the recipe's noise ladder geometrically between its first and last level;
    ``steps_per_level`` sets ``steps = levels * steps_per_level`` (without it, changing the levels keeps
    the recipe's steps per level).
    """
    from composer.sampling.recipe import resolve_options

    kwargs = {k: v for k, v in options.items() if v is not None}
    if levels is None and steps_per_level is None:
        return kwargs
    if options.get("steps") is not None:
        raise ComposerError("give --steps or a budget (--levels / --steps-per-level), not both")
    resolved = resolve_options(energy, True, {"sigmas": None, "steps": None})
    ladder = resolved["sigmas"]
    if not ladder:
        raise ComposerError(f"'{energy.formula()}' samples without a noise ladder: --levels and --steps-per-level "
                            f"need a recipe with sigmas; use --steps")
    per_level = steps_per_level if steps_per_level is not None else max(1, int(resolved["steps"]) // len(ladder))
    if levels is not None:
        ladder = geometric_ladder(ladder[0], ladder[-1], levels)
    return {**kwargs, "sigmas": [float(s) for s in ladder], "steps": len(ladder) * per_level}


def resolved_recipe(energy: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every ``composer.sample`` option the composition will sample with (JSON data)."""
    from composer.sampling.recipe import DEFAULTS, resolve_options

    given = {k: kwargs.get(k) for k in DEFAULTS}
    return _jsonable(resolve_options(energy, True, given))


def load_plan(source: str | Path | Plan, n: int | None, defs: str | None) -> Plan:
    """A ``Plan`` from a composition (needs ``n``), a plan TOML path (``.toml``), or a ``Plan``."""
    from composer.compositions import read_definitions

    definitions = read_definitions(defs) if defs else {}
    if isinstance(source, Plan):
        return source
    text = str(source)
    if text.endswith(".toml"):
        if not Path(text).is_file():
            raise PlanError(f"plan file '{text}' not found")
        return read_plan(text, n, definitions)
    if n is None:
        raise PlanError("give the number of samples (-n) for a single composition")
    return plan_from_expr(text, n, definitions)


def generate(
    source: str | Path | Plan,
    out: str | Path,
    n: int | None = None,
    *,
    shard_size: int = 1024,
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    step_size: float | None = None,
    noise: str | float | None = None,
    temperature: float | None = None,
    levels: int | None = None,
    steps_per_level: int | None = None,
    clip: bool = True,
    device: str | torch.device = "cpu",
    defs: str | None = None,
    progress: bool = False,
    registry: Any = None,
) -> GenerationResult:
    """Make the dataset of ``source`` in the folder ``out``, or resume it.

    Args:
        source: a composition (``"red & triangle"``, with ``n``), a plan TOML file, or a ``Plan``.
        out: the dataset folder (created; an existing one must hold the same dataset, which is resumed).
        n: samples of a single composition; with a plan, the count of entries that give none.
        shard_size: samples per shard (the last shard may hold fewer).
        seed: the dataset's seed; segment seeds derive from ``(seed, shard, composition)``.
        steps, sampler, step_size, noise, temperature: ``composer.sample`` options (``None``: the recipe's).
        levels, steps_per_level: the budget of a recipe with a noise ladder (see ``sampler_kwargs``).
        clip: clamp the samples to the composition's domain (when it has one) before writing.
        device: ``cpu``, ``cuda`` (each torchrun rank takes ``cuda:LOCAL_RANK``), ...
        defs: TOML file of named sub-compositions.
        progress: a progress bar (samples/s, ETA) on rank 0.
        registry: where names are looked up (default: the installed plugins).

    Returns:
        A ``GenerationResult``. Every shard is ``out/shard-NNNNNN.npz`` with ``x`` (float32
        ``(count, *event_shape)``), ``energy`` (float32), ``composition`` (int64 index into the plan) and one
        int64 array per label.
    """
    from composer.language import parse
    from composer.plugins import get_registry
    from composer.training.distributed import barrier, init_distributed, shutdown

    start = time.perf_counter()
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise PlanError(f"shard size must be an integer >= 1, got {shard_size!r}")
    for name, value in (("levels", levels), ("steps_per_level", steps_per_level)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PlanError(f"{name} must be an integer >= 1, got {value!r}")
    plan = load_plan(source, n, defs)
    registry = registry if registry is not None else get_registry()
    dev = torch.device(device)
    options = {"steps": steps, "sampler": sampler, "step_size": step_size, "noise": noise, "temperature": temperature}
    energies, kwargs, recipes, which = [], [], [], []
    for k, item in enumerate(plan.items):
        try:
            energy = parse(item.expr, registry=registry, definitions=plan.definitions or None)
        except ComposerError as exc:
            if len(plan.items) == 1:
                raise
            raise PlanError(f"composition {k} ('{item.expr}'): {exc}") from None
        kw = sampler_kwargs(energy, options, levels, steps_per_level)
        recipe = resolved_recipe(energy, kw)
        if recipe not in recipes:
            recipes.append(recipe)
        energies.append(energy)
        kwargs.append(kw)
        which.append(recipes.index(recipe))
    event_shape = [int(s) for s in energies[0].event_shape]
    for k, e in enumerate(energies):
        if [int(s) for s in e.event_shape] != event_shape:
            raise PlanError(f"composition {k} ('{plan.items[k].expr}') has event shape {tuple(e.event_shape)}, "
                            f"composition 0 {tuple(event_shape)}: a dataset holds one shape")

    info = init_distributed(dev)
    try:
        folder = Path(out)
        total, k_shards = plan.total, num_shards(plan.total, shard_size)
        identity = {
            "format": FORMAT, "plan": plan.to_json(), "seed": int(seed), "shard_size": shard_size,
            "device": info.device.type,
            "sampler": {"options": _jsonable({**options, "levels": levels, "steps_per_level": steps_per_level,
                                              "clip": clip}),
                        "recipes": recipes, "composition_recipe": which},
        }
        arrays = {"x": {"dtype": "float32", "shape": event_shape}, "energy": {"dtype": "float32", "shape": []},
                  "composition": {"dtype": "int64", "shape": []},
                  **{name: {"dtype": "int64", "shape": []} for name in plan.labels}}
        started = {**identity, "complete": False, "versions": versions(), "num_samples": total,
                   "num_shards": k_shards, "arrays": arrays}
        prepare_folder(folder)
        found = read_index(folder)
        if found is not None:
            check_identity(folder, found, identity)
        barrier(info)
        if info.is_main:
            remove_stale_temporaries(folder)  # what a killed writer left: never a final name
            if found is None:
                write_index(folder, started)
        barrier(info)

        done_records = {s["file"]: s for s in found["shards"]} if found and found.get("complete") else {}
        mine = list(range(info.rank, k_shards, info.world_size))
        made, skipped, todo = [], [], []
        for i in mine:
            record = done_records.get(SHARD_NAME.format(i)) or read_record(folder, i)
            if problem(folder, record, shard_count(total, shard_size, i)) is None:
                skipped.append(i)
            else:
                todo.append(i)
        bar = None
        if progress and info.is_main and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(shard_count(total, shard_size, i) for i in todo), unit="sample", unit_scale=True,
                       desc="generate" + (f" (rank 0 of {info.world_size})" if info.enabled else ""),
                       dynamic_ncols=True)
        counts = [item.count for item in plan.items]
        try:
            for i in todo:
                shard = make_shard(plan, energies, kwargs, counts, shard_size, int(seed), i, info.device, clip,
                                   registry, bar)
                data = npz_bytes(shard)
                name = SHARD_NAME.format(i)
                atomic_write_bytes(folder / name, data)
                write_record(folder, i, {"file": name, "count": int(shard["x"].shape[0]), "bytes": len(data),
                                         "sha256": sha256(data)})
                made.append(i)
                if bar is not None:
                    bar.set_postfix(shards=f"{len(made) + len(skipped)}/{len(mine)}", refresh=False)
        finally:
            if bar is not None:
                bar.close()
        barrier(info)
        index = started
        if info.is_main:
            index = finish(folder, started, done_records, k_shards)
        barrier(info)
    finally:
        shutdown(info)
    return GenerationResult(folder, index, made, skipped, time.perf_counter() - start, info.rank, info.world_size)


def make_shard(plan: Plan, energies: list[Any], kwargs: list[dict[str, Any]], counts: list[int], shard_size: int,
               seed: int, i: int, device: torch.device, clip: bool, registry: Any,
               bar: Any = None) -> dict[str, np.ndarray]:
    """The arrays of shard ``i``: one ``composer.sample`` call per segment (see ``composer.generation.shards``)."""
    from composer.sampling import sample

    xs, es, comps = [], [], []
    for seg in segments(counts, shard_size, i):
        energy = energies[seg.composition]
        result = sample(energy, n=seg.count, seed=segment_seed(seed, i, seg.composition), device=device,
                        registry=registry, **kwargs[seg.composition])
        x = result.x
        domain = energy.domain
        if clip and domain is not None:
            x = torch.maximum(torch.minimum(x, domain[1].to(x)), domain[0].to(x))
        xs.append(x.detach().float().cpu().numpy())
        es.append(result.energy.detach().float().cpu().numpy())
        comps.append(np.full(seg.count, seg.composition, dtype=np.int64))
        if bar is not None:
            bar.update(seg.count)
    composition = np.concatenate(comps)
    out = {"x": np.concatenate(xs), "energy": np.concatenate(es), "composition": composition}
    for name in plan.labels:
        table = np.array([item.labels[name] for item in plan.items], dtype=np.int64)
        out[name] = table[composition]
    return out


def finish(folder: Path, started: dict[str, Any], done_records: dict[str, Any], k_shards: int) -> dict[str, Any]:
    """Rank 0, after every rank is done: the complete index from the shards' records; records removed."""
    shards = []
    for i in range(k_shards):
        name = SHARD_NAME.format(i)
        record = read_record(folder, i) or done_records.get(name)
        path = folder / name
        if record is None or not path.is_file() or path.stat().st_size != record["bytes"]:
            raise DatasetError(f"shard {name} is missing after every rank finished; rerun to make it")
        shards.append({"file": name, "count": record["count"], "bytes": record["bytes"], "sha256": record["sha256"]})
    index = {**started, "complete": True, "shards": shards}
    write_index(folder, index)
    for i in range(k_shards):
        record_path(folder, i).unlink(missing_ok=True)
    return index
