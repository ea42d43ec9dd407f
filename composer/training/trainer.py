"""The trainer: recipe -> network, data, objective, Adam (+ EMA) -> checkpoints and an expert.

``composer.train("recipe.toml")`` (or ``composer train recipe.toml``) writes into the recipe's
``output`` folder::

    recipe.json                     the resolved recipe (``composer train --resume DIR`` reads it)
    checkpoints/step-XXXXXXXX.safetensors   training state every [checkpoint] every steps
    log.jsonl                       loss terms every [log] every steps
    negatives-XXXXXXXX.png          current negatives every [log] image_every steps
    expert.safetensors              the trained expert (EMA weights if any): expert_from_checkpoint
    report.json                     recipe, data fingerprint, final loss terms, timings

After a kill at any moment, ``train(..., resume=True)`` restarts from the newest checkpoint and
reproduces the uninterrupted run exactly (batches and noise are functions of the step; the
model, optimizer, EMA, replay buffer and generator states are all in the checkpoint).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from composer.errors import CheckpointError, ComposerError, SamplingDivergedError
from composer.nets import build_network
from composer.training import checkpoint as ckpt
from composer.training import distributed as distr
from composer.training.config import ConfigError, TrainConfig, config_from_dict, load_config
from composer.training.data import Batches, TrainingData, prepare_data
from composer.training.guards import DivergenceGuard
from composer.training.objectives import CDObjective, DiscriminativeObjective, DSMObjective


class EMA:
    """Exponential moving average of a module's weights (buffers are copied).

    Args:
        module: the network.
        decay: ``ema <- decay * ema + (1 - decay) * weights`` after every step.
    """

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self._params = dict(module.named_parameters())

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            if k in self._params and v.is_floating_point():
                self.shadow[k].lerp_(v, 1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)


@dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        output: the output folder.
        start_step: the step this call resumed from (0 for a fresh run).
        expert_path: ``output/expert.safetensors`` (``None`` on ranks other than 0).
        step: steps done.
        report: the content of ``report.json``.
        network: the trained network (raw weights; the exported expert uses EMA weights if any).
    """

    output: Path
    expert_path: Path | None
    step: int
    report: dict[str, Any]
    network: nn.Module
    start_step: int = 0
    """The step this call started (or resumed) from: ``step - start_step`` steps ran in this call."""

    def expert(self, value: str | None = None) -> Any:
        """The exported expert (see ``composer.expert_from_checkpoint``)."""
        return ckpt.expert_from_checkpoint(self.output / ckpt.EXPERT_FILE, value=value)


class Trainer:
    """One training run; ``run()`` trains to ``cfg.steps`` and exports the expert.

    Args:
        cfg: the recipe.
        data: the data (default: loaded from ``cfg.data``).
        registry: where registered datasets are looked up.
        progress: show a progress bar (default ``cfg.log.progress``).
    """

    def __init__(self, cfg: TrainConfig, data: TrainingData | None = None, registry: Any = None,
                 progress: bool | None = None):
        cfg.validate(require_source=data is None)
        self.cfg = cfg
        self.dist = distr.init_distributed(cfg.device)
        self.device = self.dist.device
        self.output = Path(cfg.output)
        self.progress = cfg.log.progress if progress is None else progress
        try:
            self.data = (data if data is not None else prepare_data(cfg.data, registry)).to(self.device)
        except ComposerError:
            raise
        except (Exception, MemoryError) as exc:  # a loader failing on the recipe's options, or out of memory
            source = cfg.data.dataset or cfg.data.path
            raise ConfigError(f"[data] '{source}' could not be loaded: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}") from None
        values = self.data.values
        net_cfg = {**cfg.network, "event_shape": list(self.data.event_shape),
                   "num_classes": len(values) if values else 0,
                   "noise_conditional": cfg.objective in ("dsm", "discriminative")}
        state = torch.get_rng_state()
        torch.manual_seed(cfg.seed)  # same initial weights on every rank and every run
        try:
            self.net = build_network(net_cfg, registry).to(self.device)
        except (ValueError, TypeError, RuntimeError, KeyError) as exc:  # e.g. hidden = [-8]
            raise ConfigError(f"[network] cannot be built: {type(exc).__name__}: {' '.join(str(exc).split())}") \
                from None
        finally:
            torch.set_rng_state(state)
        self.model = distr.wrap(self.net, self.dist)
        o = cfg.optim
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=o.lr, betas=tuple(o.betas),
                                          weight_decay=o.weight_decay)
        self.ema = EMA(self.net, o.ema) if o.ema > 0 else None
        rank, world = self.dist.rank, self.dist.world_size
        self.batches = Batches(self.data, cfg.batch_size, cfg.seed, rank, world)
        domain = tuple(t.to(self.device) for t in self.data.domain)
        if cfg.objective == "cd":
            capacity = max(1, cfg.cd.buffer_size // world)
            self.objective: Any = CDObjective(cfg.cd, self.net, self.data.event_shape, domain, self.device,
                                              cfg.seed + rank, capacity, self.data.y)
            self.sigmas = None
        elif cfg.objective == "discriminative":
            if not values:
                raise ConfigError("objective = \"discriminative\" trains a concept family: set [data] labels "
                                  "(an array of value indices) and values")
            self.objective = DiscriminativeObjective(cfg.dsm, len(values), self.device, cfg.seed, cfg.batch_size,
                                                     self.batches.lo)
            self.sigmas = [float(s) for s in self.objective.sigmas]
        else:
            self.objective = DSMObjective(cfg.dsm, self.data.event_shape, domain, self.device, cfg.seed,
                                          cfg.batch_size, self.batches.lo)
            self.sigmas = [float(s) for s in self.objective.sigmas]
        self.guard = DivergenceGuard(cfg.guard)
        self.step = 0
        self.lr_scale = 1.0
        self.last_stats: dict[str, float] = {}
        self.seconds = 0.0
        self.start_step = 0
        self._t0: float | None = None  # perf_counter at the start of the current run() (None outside it)

    # -- one iteration -----------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, Tensor]:
        """Batch ``step``: negatives or noise, loss, backward, Adam (+ clip, EMA), guard. No host sync."""
        x, y = self.batches(step)
        loss, stats = self.objective.loss(self.model, self.net, x, y, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.optim.clip_grad_norm)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.net)
        if self.cfg.objective == "cd":
            self.guard.observe(step + 1, stats["e_pos"], stats["e_neg"], stats["loss"])
        else:  # DSM and discriminative energies have no fixed scale (only their gradients or differences count)
            zero = stats["loss"].new_zeros(())
            self.guard.observe(step + 1, zero, zero, stats["loss"])
        return stats

    # -- the loop ------------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train from ``self.step`` to ``cfg.steps`` (or ``stop_after`` more steps), then export.

        Raises:
            TrainingDivergedError: the guard fired and no rollback is left.
        """
        from tqdm.auto import tqdm

        cfg, main = self.cfg, self.dist.is_main
        if main:
            self.output.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write_bytes(self.output / "recipe.json", json.dumps(cfg.to_dict(), indent=2).encode())
        if self.step == 0:
            self.save()  # step 0: a run killed before its first interval resumes from here
        end = cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (self.progress and main), desc=cfg.name,
                   dynamic_ncols=True)
        self._t0 = time.perf_counter()
        self.start_step = self.step
        try:
            while self.step < end:
                try:
                    stats = self.train_step(self.step)
                except SamplingDivergedError as exc:  # NaN weights make the negatives diverge first
                    self._diverged(f"training diverged at step {self.step + 1}: the negatives diverged ({exc})")
                    bar.n = self.step
                    continue
                self.step += 1
                at_ckpt = self.step % cfg.checkpoint.every == 0 or self.step in (cfg.steps, end)
                if self.step % cfg.log.every == 0 or at_ckpt or self.step == end:
                    if self._diverged():
                        bar.n = self.step
                        continue
                    self._log(stats, bar)
                if at_ckpt:
                    self.save()
                if main and cfg.log.image_every and self.step % cfg.log.image_every == 0:
                    self.write_negatives(self.output / f"negatives-{self.step:08d}.png")
        finally:
            bar.close()
        result = self.finish() if self.step >= cfg.steps else self._result(None)
        self.seconds, self._t0 = self.elapsed(), None
        return result

    def elapsed(self) -> float:
        """Seconds of training of this run over all its resumes (checkpoints carry it across a kill)."""
        return self.seconds + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def _diverged(self, reason: str | None = None) -> bool:
        """Read the guard (all ranks agree); roll back or raise. ``True`` after a rollback.

        Args:
            reason: a divergence seen elsewhere (the sampler), used if the guard saw none.
        """
        message = self.guard.check() or reason
        if reason is None and not distr.any_rank(message is not None, self.dist):
            return False
        message = message or "training diverged on another rank"
        latest = ckpt.latest_checkpoint(self.output)
        if not self.guard.can_roll_back() or latest is None:
            raise self.guard.fail(message)
        rollbacks = self.guard.rollbacks + 1
        self.restore(latest)
        self.guard.rollbacks = rollbacks
        self.lr_scale *= 0.5
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.optim.lr * self.lr_scale
        if self.dist.is_main:
            print(f"composer train: {message}; rolled back to step {self.step} with lr x{self.lr_scale:g}")
        return True

    def _log(self, stats: dict[str, Tensor], bar: Any) -> None:
        values = {k: float(v) for k, v in stats.items()}
        self.last_stats = values
        bar.n = self.step
        bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
        bar.refresh()
        if self.dist.is_main:
            append_line(self.output / "log.jsonl", json.dumps({"step": self.step, **values}))

    # -- state -----------------------------------------------------------------------------------
    def _metadata(self, kind: str) -> dict[str, Any]:
        return {
            "kind": kind, "name": self.cfg.name, "objective": self.cfg.objective, "network": self.net.config,
            "event_shape": list(self.data.event_shape),
            "domain": [self.data.domain[0].tolist(), self.data.domain[1].tolist()],
            "values": self.data.values, "sigmas": self.sigmas, "step": self.step,
            "recipe": self.cfg.to_dict() if kind == "training" else self._portable_recipe(),
            "data_fingerprint": self.data.fingerprint,
            "dequantize": self.data.dequantize, "world_size": self.dist.world_size, "torch_version": torch.__version__,
        }

    def _portable_recipe(self) -> dict[str, Any]:
        """The recipe with its paths relative to the output folder (an exported expert names no local path)."""
        import os

        recipe = self.cfg.to_dict()
        recipe["output"] = "."
        if recipe["data"].get("path"):
            try:
                recipe["data"]["path"] = os.path.relpath(recipe["data"]["path"], self.output)
            except ValueError:  # another drive (Windows): keep the file name only
                recipe["data"]["path"] = Path(recipe["data"]["path"]).name
        return recipe

    def save(self) -> Path | None:
        """Write the training state of ``self.step`` (rank 0; every rank sends its shard). Atomic."""
        own = {f"objective.{k}": v for k, v in self.objective.state().items()}
        shards = {}
        for k in sorted(own):  # same order on every rank
            for r, t in enumerate(distr.gather(own[k], self.dist)):
                shards[f"rank{r}.{k}"] = t
        if not self.dist.is_main:
            return None
        tensors = {f"model.{k}": v for k, v in self.net.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.shadow.items()})
        opt = self.optimizer.state_dict()
        extra: dict[str, Any] = {}
        for i, st in opt["state"].items():
            for key, v in st.items():
                if isinstance(v, Tensor):
                    tensors[f"optim.{i}.{key}"] = v
                else:
                    extra[f"{i}.{key}"] = v
        tensors.update(shards)
        tensors["rng.torch"] = torch.get_rng_state()
        meta = self._metadata("training")
        meta.update({"optimizer": {"param_groups": opt["param_groups"], "extra": extra},
                     "lr_scale": self.lr_scale, "rollbacks": self.guard.rollbacks, "seconds": self.elapsed()})
        path = ckpt.checkpoint_path(self.output, self.step)
        ckpt.save_checkpoint(path, tensors, meta)
        ckpt.prune_checkpoints(self.output, self.cfg.checkpoint.keep)
        return path

    def restore(self, path: str | Path) -> None:
        """Load a training checkpoint written by ``save`` (checks it belongs to this recipe)."""
        tensors, meta = ckpt.load_checkpoint(path, self.device)
        if meta["kind"] != "training":
            raise CheckpointError(f"{path} is an exported expert, not a training checkpoint")
        for key, mine in (("objective", self.cfg.objective), ("network", self.net.config),
                          ("values", self.data.values), ("data_fingerprint", self.data.fingerprint)):
            if meta.get(key) != mine:
                raise CheckpointError(f"{path} does not match this recipe: its {key} is {meta.get(key)!r}, "
                                      f"the recipe's is {mine!r}")
        for key, t in tensors.items():  # NaN weights: not a state to continue from
            if key.startswith(("model.", "ema.", "optim.")) and t.is_floating_point() \
                    and not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"{path}: tensor '{key}' holds NaN or infinite values (a corrupt checkpoint)")
        ckpt.load_weights(self.net, ckpt.prefixed(tensors, "model"), str(path))
        if self.ema is not None:
            ema = ckpt.prefixed(tensors, "ema")
            if not ema:
                raise CheckpointError(f"{path} has no EMA weights but the recipe asks for [optim] ema")
            self.ema.shadow = {k: ema[k].clone() for k in self.ema.shadow}
        state: dict[int, dict[str, Any]] = {}
        for k, v in ckpt.prefixed(tensors, "optim").items():
            i, key = k.split(".", 1)
            state.setdefault(int(i), {})[key] = v
        for k, v in meta["optimizer"]["extra"].items():
            i, key = k.split(".", 1)
            state.setdefault(int(i), {})[key] = v
        try:
            self.optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: optimizer state does not fit: {exc}") from exc
        self.objective.load_state(self._shard(tensors, meta, path))
        torch.set_rng_state(tensors["rng.torch"].cpu())
        self.step, self.lr_scale = int(meta["step"]), float(meta.get("lr_scale", 1.0))
        self.guard.rollbacks, self.seconds = int(meta.get("rollbacks", 0)), float(meta.get("seconds", 0.0))
        self.guard.reset()
        log = self.output / "log.jsonl"
        if self.dist.is_main and log.is_file():  # forget what was logged after this checkpoint (and torn lines)
            text = log.read_bytes().decode("utf-8", errors="replace")
            lines = [line for line in text.splitlines() if line.strip()]
            kept = [line for line in lines if _logged_step(line) is not None and _logged_step(line) <= self.step]
            if len(kept) != len(lines) or (text and not text.endswith("\n")):
                ckpt.atomic_write_bytes(log, "".join(line + "\n" for line in kept).encode())

    def _shard(self, tensors: dict[str, Tensor], meta: dict[str, Any], path: Any) -> dict[str, Tensor]:
        world, rank = int(meta.get("world_size", 1)), self.dist.rank
        if world != self.dist.world_size:
            raise CheckpointError(f"{path} was written by {world} processes; resume with the same number "
                                  f"(got {self.dist.world_size})")
        return ckpt.prefixed(ckpt.prefixed(tensors, f"rank{rank}"), "objective")

    # -- outputs ---------------------------------------------------------------------------------
    def write_negatives(self, path: Path) -> None:
        """A PNG of current negatives (CD) or annealed samples (DSM); 2-D points or an image grid (none for
        ``discriminative``)."""
        from composer.figures import save_samples_png

        n = min(512, max(64, self.cfg.batch_size))
        cond = None
        if self.data.values:
            cond = torch.arange(n, device=self.device) % len(self.data.values)
        x = self.objective.sample(self.net, n, cond)
        if x is None:  # the objective draws no samples (discriminative)
            return
        x = x.detach().cpu()
        shape = tuple(x.shape[1:])
        title = f"{self.cfg.name}: step {self.step}"
        if len(shape) == 3 and shape[0] in (1, 3):
            save_samples_png(x.clamp(0, 1), path, title=title)
        elif shape in ((1,), (2,)):
            density = None
            if cond is None and self.sigmas is None:  # the model's density exp(-E) behind the negatives

                def density(pts: Tensor) -> Tensor:
                    with torch.no_grad():
                        return self.net(pts.to(self.device)).cpu()

            save_samples_png(x, path, energy_fn=density, title=title)

    def finish(self) -> TrainResult:
        """Export ``expert.safetensors`` (EMA weights if any), the last PNG and ``report.json`` (rank 0)."""
        if not self.dist.is_main:
            distr.barrier(self.dist)
            return self._result(None)
        weights = self.ema.shadow if self.ema is not None else self.net.state_dict()
        path = self.output / ckpt.EXPERT_FILE
        ckpt.save_checkpoint(path, {f"model.{k}": v for k, v in weights.items()}, self._metadata("expert"))
        if self.cfg.log.image_every:
            self.write_negatives(self.output / "negatives.png")
        report = {
            "name": self.cfg.name, "objective": self.cfg.objective, "steps": self.step,
            "seconds": round(self.elapsed(), 3), "final": self.last_stats, "expert": path.name,
            "values": self.data.values, "sigmas": self.sigmas, "data_fingerprint": self.data.fingerprint,
            "parameters": sum(p.numel() for p in self.net.parameters()), "world_size": self.dist.world_size,
            "rollbacks": self.guard.rollbacks, "recipe": self.cfg.to_dict(),
        }
        ckpt.atomic_write_bytes(self.output / "report.json", json.dumps(report, indent=2).encode())
        distr.barrier(self.dist)
        return self._result(path, report)

    def _result(self, path: Path | None, report: dict[str, Any] | None = None) -> TrainResult:
        return TrainResult(self.output, path, self.step, report or {}, self.net, self.start_step)

    def restore_newest_valid(self) -> Path | None:
        """Restore the newest checkpoint that loads and holds finite weights; ``None`` if there is none at all.

        Newer checkpoints that fail (torn, corrupt, NaN weights, another recipe's) are renamed
        ``*.corrupt`` so that pruning never keeps them over good ones; a message names each.

        Raises:
            CheckpointError: checkpoints exist but none is valid.
        """
        found = ckpt.list_checkpoints(self.output)
        reasons = []
        for path in reversed(found):
            try:
                try:
                    self.restore(path)
                except (KeyError, ValueError, TypeError, RuntimeError) as exc:  # metadata of the wrong shape
                    raise CheckpointError(f"{path}: malformed training state: {type(exc).__name__}: {exc}") from exc
            except CheckpointError as exc:
                reasons.append(str(exc))
                if self.dist.is_main:
                    print(f"composer train: skipping {path.name}: {exc}")
                continue
            if self.dist.is_main:
                for bad in found[found.index(path) + 1:]:
                    bad.replace(bad.with_name(bad.name + ".corrupt"))
            return path
        if found:
            raise CheckpointError(f"no valid checkpoint in {self.output / ckpt.CHECKPOINT_DIR} "
                                  f"({len(found)} tried; newest: {reasons[0]}); nothing to resume")
        return None


def train(config: TrainConfig | dict[str, Any] | str | Path, resume: bool | str | Path = False,
          data: dict[str, Any] | TrainingData | None = None, registry: Any = None, progress: bool | None = None,
          stop_after: int | None = None, **overrides: Any) -> TrainResult:
    """Train an expert from a recipe and export it to ``OUTPUT/expert.safetensors``.

    Args:
        config: a ``TrainConfig``, a dict (parsed TOML) or the path of a TOML recipe.
        resume: ``True``: continue from the newest checkpoint of the recipe's output folder (start
            fresh if it has none); a path: use that folder as output and continue there.
        data: arrays (``{"x": ..., "y": ..., "values": ...}``) or ``TrainingData`` to train on instead
            of the recipe's data source (the fingerprint still guards resuming).
        registry: where registered datasets are looked up (default: every installed plugin).
        progress: show a progress bar (default: the recipe's ``[log] progress``).
        stop_after: stop after this many steps (then ``resume`` continues), e.g. for time-sliced jobs.
        **overrides: top-level recipe settings to replace, e.g. ``steps=2000``, ``device="cuda"``.

    Returns:
        A ``TrainResult``; ``result.expert()`` is the trained ``Energy``.

    Raises:
        ConfigError, CheckpointError, TrainingDivergedError: with one clear message.

    Example:
        >>> result = composer.train("eight.toml")                   # doctest: +SKIP
        >>> expert = result.expert() & composer.get_registry().make_expert("toy.halfspace", ...)  # doctest: +SKIP
    """
    need = data is None
    if isinstance(config, (str, Path)):
        cfg = load_config(config)
    elif isinstance(config, dict):
        cfg = config_from_dict(config, require_source=need)
    elif isinstance(config, TrainConfig):
        cfg = config_from_dict(config.to_dict(), require_source=need)  # a copy
    else:
        raise ConfigError(f"config must be a TrainConfig, a dict or a TOML path, got {type(config).__name__}")
    if resume not in (True, False):
        cfg.output = str(resume)
    for key, value in overrides.items():
        if not hasattr(cfg, key) or key in ("data", "cd", "dsm", "optim", "checkpoint", "guard", "log"):
            raise ConfigError(f"cannot override '{key}': only top-level settings ({', '.join(_TOP)})")
        setattr(cfg, key, value)
    cfg.validate(need)
    if isinstance(data, dict):
        data = prepare_data(cfg.data, registry, arrays=data)
    _check_output_folder(cfg.output)
    from composer.devices import check_device

    check_device(cfg.device)
    existing = ckpt.list_checkpoints(cfg.output)
    if existing and resume is False:
        raise ConfigError(f"{cfg.output} already holds checkpoints; resume it (composer train --resume "
                          f"{cfg.output}) or choose another output")
    trainer = Trainer(cfg, data, registry, progress)
    try:
        if existing:
            trainer.restore_newest_valid()
        return trainer.run(stop_after)
    finally:
        distr.shutdown(trainer.dist)


_TOP = ("name", "objective", "steps", "batch_size", "seed", "output", "device")


def recipe_of(output: str | Path) -> TrainConfig:
    """The recipe a training folder was started with (its ``recipe.json``, else its newest checkpoint's)."""
    output = Path(output)
    if not output.is_dir():
        raise CheckpointError(f"{output} is not a training folder: it does not exist")
    path = output / "recipe.json"
    if path.is_file():
        try:
            raw = json.loads(path.read_bytes().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raw = None
            reason = f"{path} is not valid JSON: {exc}"
        if isinstance(raw, dict):
            return config_from_dict(raw)
        reason = reason if raw is None else f"{path} is not a JSON object"
    else:
        reason = f"{output} has no recipe.json"
    latest = ckpt.latest_checkpoint(output)
    if latest is None:
        raise CheckpointError(f"{reason} and no checkpoint (killed before its first write?): start it again with "
                              f"`composer train CONFIG --resume {output}`")
    return config_from_dict(ckpt.read_metadata(latest)["recipe"])


def append_line(path: Path, line: str) -> None:
    """Append one line in one ``write`` (a kill tears at most this line; resume drops a torn one),
    never following a planted symlink."""
    import os

    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise CheckpointError(f"cannot append to {path}: {exc.strerror or exc}") from None
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _logged_step(line: str) -> int | None:
    """The step of one ``log.jsonl`` line, ``None`` for a torn or foreign line."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = entry.get("step") if isinstance(entry, dict) else None
    return step if isinstance(step, int) else None


def _check_output_folder(output: str | Path) -> None:
    """Before any work: the output folder exists and is writable, or can be created."""
    from composer.cli import check_writable_folder

    try:
        check_writable_folder(output, create=True)
    except ComposerError as exc:
        raise ConfigError(str(exc)) from None
