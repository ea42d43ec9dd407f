"""The judge: an independent Fashion-MNIST classifier that grades samples and gives Fréchet features.

A small CNN (three 3x3 convolutions 32-64-64 with max-pooling, a 128-unit penultimate layer, 10 logits),
trained on the clean train split with mild corruptions (Gaussian noise up to 0.05 on half the images,
clamped) so that slightly noisy generated images are judged fairly. It never sees the experts' networks.
``features`` gives the penultimate layer for the Fréchet distance. The shipped weights
(``weights/judge.safetensors``, config and measured test accuracy in its metadata and in
``weights/judge.json``) are reproduced (fixed seed, one CPU thread) by::

    python -m composer_fashion.judge --out composer_fashion/weights/judge.safetensors

Training saves ``--state`` every 250 steps (atomically) and resumes from it after a kill.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from composer import ComposerError
from composer_fashion.data import CLASSES, as_float, load

WEIGHTS_PATH = Path(__file__).parent / "weights" / "judge.safetensors"


class Judge(nn.Module):
    """CNN ``(B, 1, 28, 28) -> (B, 10)`` logits; ``features`` is the ``(B, hidden)`` penultimate layer."""

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 64), hidden: int = 128):
        super().__init__()
        c1, c2, c3 = (int(c) for c in channels)
        self.config = {"channels": [c1, c2, c3], "hidden": int(hidden)}
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(c3 * 7 * 7, int(hidden)), nn.ReLU())
        self.head = nn.Linear(int(hidden), len(CLASSES))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(B, hidden)`` of ``x: (B, 1, 28, 28)`` in ``[0, 1]``."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _batch(x: np.ndarray, y: np.ndarray, step: int, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
    n = x.shape[0]
    epoch, offset = divmod(step * batch_size, n)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    idx = perm[offset:offset + batch_size]
    xb = torch.from_numpy(as_float(x[idx]))
    g = torch.Generator().manual_seed(seed * 100_003 + step)
    level = 0.05 * torch.rand(xb.shape[0], 1, 1, 1, generator=g) * (torch.rand(xb.shape[0], 1, 1, 1, generator=g) < 0.5)
    xb = (xb + level * torch.randn(xb.shape, generator=g)).clamp(0, 1)
    return xb, torch.from_numpy(y[idx])


def train_judge(steps: int = 3000, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                state: str | Path | None = None, progress: bool = True, schedule_steps: int | None = None
                ) -> tuple[Judge, dict[str, Any]]:
    """Train the judge on the train split (resuming from ``state`` when it exists). Returns (model, info).

    The learning rate follows a cosine over ``schedule_steps`` (default ``steps``); training stops after ``steps``.
    """
    from tqdm import tqdm

    from composer.atomic import atomic_write_bytes

    torch.manual_seed(seed)
    model, train = Judge(), load("train")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule_steps = int(schedule_steps or steps)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, schedule_steps)
    start, cpu0 = 0, 0.0
    if state is not None and Path(state).is_file():
        blob = torch.load(state, weights_only=True)
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["opt"])
        sched.load_state_dict(blob["sched"])
        start, cpu0 = int(blob["step"]), float(blob["cpu_s"])
        if start > steps:
            raise ComposerError(f"{state} is at step {start}, past the {steps} steps asked for")
    t0 = time.process_time()
    for step in tqdm(range(start, steps), initial=start, total=steps, disable=not progress, desc="judge"):
        xb, yb = _batch(train["x"], train["y"], step, batch_size, seed)
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if state is not None and ((step + 1) % 250 == 0 or step + 1 == steps):
            import io

            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step + 1, "cpu_s": cpu0 + time.process_time() - t0}, buf)
            atomic_write_bytes(state, buf.getvalue())
    model.eval().requires_grad_(False)
    info = {"steps": steps, "schedule_steps": schedule_steps, "batch_size": batch_size, "lr": lr, "seed": seed,
            "train_cpu_s": round(cpu0 + time.process_time() - t0, 1), "test_accuracy": test_accuracy(model)}
    return model, info


@torch.no_grad()
def predict(x: Tensor | np.ndarray, model: Judge | None = None, batch: int = 1000) -> tuple[Tensor, Tensor]:
    """``(labels (N,), features (N, hidden))`` of images ``(N, 1, 28, 28)`` (uint8, or floats in [0, 1])."""
    model = model if model is not None else shipped()
    x = torch.as_tensor(as_float(x.cpu().numpy() if isinstance(x, Tensor) else x))
    labels, feats = [], []
    for i in range(0, x.shape[0], batch):
        f = model.features(x[i:i + batch])
        feats.append(f)
        labels.append(model.head(f).argmax(1))
    if not feats:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, model.config["hidden"])
    return torch.cat(labels), torch.cat(feats)


def test_accuracy(model: Judge | None = None) -> float:
    """Share of the 10,000 test images the judge classifies correctly."""
    test = load("test")
    labels, _ = predict(test["x"], model)
    return round(float((labels.numpy() == test["y"]).mean()), 4)


def save_judge(model: Judge, path: str | Path, info: dict[str, Any]) -> None:
    """Safetensors with ``config`` and ``info`` as JSON metadata, plus a ``.json`` beside it."""
    from safetensors.torch import save

    from composer.atomic import atomic_write_bytes, atomic_write_text

    meta = {"config": json.dumps(model.config), "info": json.dumps(info)}
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata=meta))
    atomic_write_text(Path(path).with_suffix(".json"),
                      json.dumps({"config": model.config, **info}, indent=2) + "\n")


def load_judge(path: str | Path | None = None) -> tuple[Judge, dict[str, Any]]:
    """The judge and its info from a safetensors file (default: the shipped one); nothing is unpickled."""
    path = Path(path) if path is not None else WEIGHTS_PATH
    if not path.is_file():
        raise ComposerError(f"judge weights not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        model = Judge(**json.loads(meta["config"]))
        info = json.loads(meta.get("info", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ComposerError(f"{path}: not a fashion judge file ({exc})") from exc
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False), info


@cache
def shipped() -> Judge:
    """The shipped judge (cached)."""
    return load_judge()[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the Fashion-MNIST judge and write its weights.")
    parser.add_argument("--out", default=str(WEIGHTS_PATH))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--schedule-steps", type=int, default=None, help="length of the cosine (default: --steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--state", default=None, help="resume file (default: OUT.state.pt)")
    args = parser.parse_args(argv)
    state = args.state or f"{args.out}.state.pt"
    model, info = train_judge(steps=args.steps, seed=args.seed, state=state, schedule_steps=args.schedule_steps)
    save_judge(model, args.out, info)
    print(json.dumps(info))


if __name__ == "__main__":
    main()

