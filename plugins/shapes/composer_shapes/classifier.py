"""The evaluation classifier: an independent judge of the attributes of shapes-world images.

A small CNN (3 conv layers, one hidden layer, ~160k parameters) with one head per attribute. Each
head has one logit per value plus a last "none of these values" logit, trained on off-world images
(``composer_shapes.offworld``: orange objects, ellipses, sizes between small and large, centres on a
midline, empty canvases), so that a generated orange triangle is judged "not red" instead of being
forced into the nearest colour. ``classify`` returns ``NONE`` (-1) for such attributes, which never
equals a requested value: the judge is strict, not lenient.

It is trained on real ``all``-split images with mild augmentation (Gaussian noise up to 0.06,
brightness 0.75-1.1, per-channel gain, up to 0.15 cross-channel bleed, blur, clamping) so that
slightly noisy or slightly off-colour generated images are judged fairly. The shipped weights
(``weights/classifier.safetensors``, metadata in the file and in ``weights/classifier.json``) are
reproduced by ``train_classifier()`` (fixed seed, one CPU thread, about 2.5 minutes)::

    python -m composer_shapes.classifier --out composer_shapes/weights/classifier.safetensors
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import composer
from composer_shapes import offworld
from composer_shapes.data import combinations, generate
from composer_shapes.world import ATTRIBUTES, IMAGE_SHAPE, ShapesError, render_batch

WEIGHTS_PATH = Path(__file__).parent / "weights" / "classifier.safetensors"
#: value ``classify`` returns for an attribute judged to be none of its values
NONE = -1
#: seed of the fresh real images that measure the shipped classifier (training draws from its own stream)
EVAL_SEED = 20240


class ShapesClassifier(nn.Module):
    """CNN with one head per attribute; each head has ``len(values) + 1`` logits (the last: "none").

    Args:
        channels: output channels of the three conv layers (each followed by ReLU and 2x2 max-pool).
        hidden: width of the shared hidden layer.
        attributes: attribute -> value names (default: the world's ``ATTRIBUTES``).
    """

    def __init__(self, channels: tuple[int, int, int] = (16, 32, 64), hidden: int = 128,
                 attributes: dict[str, list[str]] | None = None):
        super().__init__()
        self.attributes = {k: list(v) for k, v in (attributes or ATTRIBUTES).items()}
        self.config = {"channels": list(channels), "hidden": hidden, "attributes": self.attributes}
        layers: list[nn.Module] = []
        c_in = IMAGE_SHAPE[0]
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        side = IMAGE_SHAPE[1] // 2 ** len(channels)
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * side * side, hidden), nn.ReLU())
        self.heads = nn.ModuleDict({a: nn.Linear(hidden, len(v) + 1) for a, v in self.attributes.items()})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Logits per attribute: ``x`` (B, 3, 32, 32) -> {attribute: (B, len(values) + 1)}."""
        h = self.features(x)
        return {a: head(h) for a, head in self.heads.items()}


# -- data for training ------------------------------------------------------------------------------
def augment(x: Tensor, g: torch.Generator) -> Tensor:
    """Mild corruptions a generated image may show: (B, 3, 32, 32) -> (B, 3, 32, 32).

    Per image: colour mixing (gain 0.93-1.03 per channel, 0-0.15 bleed between channels, i.e. hue
    within ~9 degrees and saturation >= 0.85 of a world colour), brightness 0.75-1.1, a 3x3 blur
    with probability 0.25, Gaussian noise (sigma 0-0.06) plus an offset (-0.02-0.03), and clamping to
    [0, 1] with probability 0.5.
    """
    b = x.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=g)
    mix = torch.diag_embed(0.93 + 0.1 * u(b, 3)) + 0.15 * u(b, 3, 3) * (1 - torch.eye(3))
    x = torch.einsum("bij,bjhw->bihw", mix, x) * (0.75 + 0.35 * u(b, 1, 1, 1))
    k = torch.tensor([0.25, 0.5, 0.25])
    blur = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"),
                                (k[:, None] * k[None, :]).expand(3, 1, 3, 3), groups=3)
    x = torch.where(u(b, 1, 1, 1) < 0.25, blur, x)
    x = x + 0.06 * u(b, 1, 1, 1) * torch.randn(x.shape, generator=g) + (0.05 * u(b, 1, 1, 1) - 0.02)
    return torch.where(u(b, 1, 1, 1) < 0.5, x.clamp(0.0, 1.0), x)


def training_batch(n: int, rng: np.random.Generator, negative_fraction: float) -> tuple[Tensor, dict[str, Tensor]]:
    """``n`` images, ``all``-split real ones plus a ``negative_fraction`` of off-world ones, with labels."""
    n_neg = int(round(n * negative_fraction))
    combos = combinations("all")
    pick = combos[rng.integers(0, len(combos), n - n_neg)]
    x_real = render_batch(pick[:, 0], pick[:, 1], pick[:, 2], pick[:, 3], rng.random((n - n_neg, 4)))
    x_neg, y_neg, _ = offworld.sample(n_neg, rng)
    x = torch.from_numpy(np.concatenate([x_real, x_neg]))
    labels = {a: torch.from_numpy(np.concatenate([pick[:, i], y_neg[a]])) for i, a in enumerate(ATTRIBUTES)}
    return x, labels


def train_classifier(steps: int = 2000, batch_size: int = 128, lr: float = 3e-3, seed: int = 0,
                     negative_fraction: float = 0.3, out: str | Path | None = None, threads: int | None = 1,
                     progress: bool = True, eval_n: int = 2000) -> tuple[ShapesClassifier, dict[str, Any]]:
    """Train the evaluation classifier from scratch (deterministic for a seed on one thread).

    Args:
        steps: Adam steps (cosine learning-rate decay after 100 warm-up steps).
        batch_size: images per step, freshly rendered (no image is seen twice).
        lr: peak learning rate.
        seed: seeds the data stream, the augmentation and the initialisation.
        negative_fraction: share of off-world images per batch.
        out: write the weights (safetensors) and a JSON sidecar there; ``None``: don't write.
        threads: ``torch.set_num_threads`` during training (restored after); ``None``: leave as is.
        progress: show a tqdm progress bar.
        eval_n: fresh real images for the accuracy stored in the metadata.

    Returns:
        The trained model (eval mode) and its metadata (config, recipe, measured figures).
    """
    from tqdm import tqdm

    recipe = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "optimizer": "adam",
              "schedule": "linear warm-up 100 steps, cosine decay", "negative_fraction": negative_fraction,
              "data": "all split, freshly rendered each step",
              "augmentation": " ".join(augment.__doc__.split("\n\n")[1].split())}
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        rng, g = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
        model = ShapesClassifier()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        warm = min(100, steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 1.0) * 0.5 * (
            1 + np.cos(np.pi * min(max(s - warm, 0) / max(steps - warm, 1), 1.0))))
        start = time.perf_counter()
        bar = tqdm(range(steps), desc="classifier", disable=not progress)
        for step in bar:
            x, y = training_batch(batch_size, rng, negative_fraction)
            logits = model(augment(x, g))
            loss = sum(nn.functional.cross_entropy(logits[a], y[a]) for a in ATTRIBUTES)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        train_seconds = time.perf_counter() - start
        model.eval()
        info = {"config": model.config, "recipe": recipe, "train_seconds": round(train_seconds, 1),
                "torch_threads": torch.get_num_threads(), "parameters": sum(p.numel() for p in model.parameters()),
                "eval": evaluate(model, n=eval_n, seed=EVAL_SEED)}
    finally:
        torch.set_num_threads(old_threads)
    if out is not None:
        save_classifier(model, out, info)
    return model, info


# -- files ------------------------------------------------------------------------------------------
def save_classifier(model: ShapesClassifier, path: str | Path, info: dict[str, Any]) -> None:
    """Write ``path`` (safetensors; ``info`` as JSON in its metadata) and ``path`` with ``.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "composer-shapes-classifier/1", "info": json.dumps(info)})
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")


def load_classifier(path: str | Path | None = None, device: str | torch.device = "cpu") -> ShapesClassifier:
    """The classifier stored at ``path`` (default: the shipped weights), in eval mode.

    Reads only safetensors (never unpickles); its metadata gives the architecture.
    Raises ``composer.CheckpointError`` for a missing or malformed file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path) if path is not None else WEIGHTS_PATH
    if not path.is_file():
        raise composer.CheckpointError(f"classifier weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {})["info"])
        config = info["config"]
        model = ShapesClassifier(tuple(config["channels"]), config["hidden"], config["attributes"])
        model.load_state_dict(load_file(str(path)))
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as exc:
        raise composer.CheckpointError(f"malformed classifier file {path}: {exc}") from exc
    model.info = info
    return model.to(device).eval()


@functools.lru_cache(maxsize=1)
def _shipped() -> ShapesClassifier:
    return load_classifier()


# -- judging ----------------------------------------------------------------------------------------
def _as_batch(x: Tensor | np.ndarray, model: nn.Module) -> Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise ShapesError(f"expected images of shape (B, 3, 32, 32), got {tuple(x.shape)}")
    return x.to(next(model.parameters()).device)


@torch.no_grad()
def probabilities(x: Tensor | np.ndarray, model: ShapesClassifier | None = None,
                  batch_size: int = 1024) -> dict[str, Tensor]:
    """Softmax probabilities per attribute: ``x`` (B, 3, 32, 32) -> {attribute: (B, len(values) + 1)}.

    The last column is the probability of "none of these values".
    """
    model = model if model is not None else _shipped()
    x = _as_batch(x, model)
    chunks = [model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)] or [model(x[:0])]
    return {a: torch.cat([c[a] for c in chunks]).softmax(-1).cpu() for a in model.attributes}


def classify(x: Tensor | np.ndarray, model: ShapesClassifier | None = None,
             min_confidence: float = 0.0) -> dict[str, Tensor]:
    """Judge images: ``x`` (B, 3, 32, 32) in [0, 1] -> {attribute: (B,) int64 value index}.

    An attribute judged to be none of its values (or, with ``min_confidence``, whose most
    probable value has a lower probability) is ``NONE`` (-1).
    """
    out = {}
    for a, p in probabilities(x, model).items():
        conf, idx = p.max(-1)
        none = (idx == p.shape[-1] - 1) | (conf < min_confidence)
        out[a] = torch.where(none, torch.full_like(idx, NONE), idx)
    return out


def accuracy(model: ShapesClassifier | None = None, n: int = 2000, split: str = "all", seed: int = EVAL_SEED,
             noise: float = 0.0) -> dict[str, float]:
    """Share of ``n`` fresh real images of ``split`` whose attribute is judged right ("none" is wrong).

    ``noise``: standard deviation of Gaussian noise added before judging (then clamped to [0, 1]).
    """
    data = generate(n, split, seed)
    x = torch.from_numpy(data["x"])
    if noise > 0:
        x = (x + noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0.0, 1.0)
    pred = classify(x, model)
    return {a: float((pred[a].numpy() == data[a]).mean()) for a in ATTRIBUTES}


def offworld_rejection(model: ShapesClassifier | None = None, n: int = 2000, seed: int = EVAL_SEED) -> dict[str, Any]:
    """How strict the judge is on fresh off-world images.

    Returns:
        ``{break: share of images whose broken attribute is judged NONE}`` for each kind of break
        (``None`` if ``n`` drew no such image), and ``orange_as_red``: share of orange objects (hue
        25-35 degrees) judged red.
    """
    rng = np.random.default_rng([seed, 1])
    x, _, brk = offworld.sample(n, rng)
    pred = classify(x, model)
    out: dict[str, Any] = {}
    for i, name in enumerate(offworld.BREAKS):
        attrs = list(ATTRIBUTES) if name == "empty" else [name]
        rows = brk == i
        judged_none = np.all([pred[a].numpy()[rows] == NONE for a in attrs], axis=0)
        out[name] = float(judged_none.mean()) if rows.any() else None
    combos = combinations("all")
    pick = combos[rng.integers(0, len(combos), n)]
    orange = render_batch(pick[:, 0], np.zeros(n, np.int64), pick[:, 2], pick[:, 3], rng.random((n, 4)))
    hue = rng.uniform(25.0, 35.0, n)
    orange[:, 1] = orange[:, 0] * (hue / 60.0)[:, None, None]  # R = 1, G = hue / 60: orange
    out["orange_as_red"] = float((classify(orange, model)["color"].numpy() == 0).mean())
    return out


def evaluate(model: ShapesClassifier | None = None, n: int = 2000, seed: int = EVAL_SEED) -> dict[str, Any]:
    """Accuracy on clean and noisy (sigma 0.05) fresh real images, and strictness off-world."""
    return {"n": n, "seed": seed, "accuracy": accuracy(model, n, seed=seed),
            "accuracy_noise_0.05": accuracy(model, n, seed=seed, noise=0.05),
            "offworld_judged_none": offworld_rejection(model, n, seed)}


def main(argv: list[str] | None = None) -> None:
    """``python -m composer_shapes.classifier [--out PATH] [--steps N] [--seed S]``: train, print the figures."""
    import argparse

    parser = argparse.ArgumentParser(description="Train the shapes-world evaluation classifier.")
    parser.add_argument("--out", default=str(WEIGHTS_PATH), help="safetensors file to write (and PATH.json)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    _, info = train_classifier(steps=args.steps, seed=args.seed, out=args.out)
    print(json.dumps({k: info[k] for k in ("train_seconds", "parameters", "eval")}, indent=2))


if __name__ == "__main__":
    main()
