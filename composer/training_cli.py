"""The ``composer train`` subcommand (added to the CLI by ``composer.training.builtin``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

EPILOG = """
\b
Examples:
  composer train eight.toml
  composer train eight.toml --steps 2000 --device cuda
  composer train --resume runs/eight            # continue after an interruption
  torchrun --nproc_per_node=2 -m composer.training eight.toml
  composer sample 'ckpt.load(path="runs/eight") & toy.halfspace(normal=[0,1], offset=0)' --out s.png
"""


@click.command("train", epilog=EPILOG)
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--resume", "resume", type=click.Path(file_okay=False), default=None,
              help="Continue the run in DIR from its newest checkpoint (the recipe comes from DIR unless CONFIG "
                   "is given).")
@click.option("--steps", type=click.IntRange(min=0), default=None, help="Total steps (overrides the recipe).")
@click.option("--device", default=None, help="Torch device (overrides the recipe), e.g. cpu, cuda.")
@click.option("--output", default=None, type=click.Path(file_okay=False), help="Output folder (overrides the recipe).")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=None, help="Seed (overrides the recipe).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train_command(config: str | None, resume: str | None, steps: int | None, device: str | None, output: str | None,
                  seed: int | None, quiet: bool) -> None:
    """Train an expert from the TOML recipe CONFIG; writes checkpoints and OUTPUT/expert.safetensors."""
    from composer.training.trainer import recipe_of, train

    if config is None and resume is None:
        raise click.UsageError("give a recipe (CONFIG.toml) or --resume DIR")
    if resume is not None and output is not None:
        raise click.UsageError("--resume DIR already names the output folder; drop --output")
    if device is not None:
        from composer.devices import check_device

        check_device(device)
    if config is not None:
        recipe: Any = config
    else:
        recipe = recipe_of(resume)
    overrides = {k: v for k, v in {"steps": steps, "device": device, "output": output, "seed": seed}.items()
                 if v is not None}
    result = train(recipe, resume=resume if resume is not None else False, progress=False if quiet else None,
                   **overrides)
    if result.expert_path is None:
        return
    final = ", ".join(f"{k} {v:.4g}" for k, v in result.report.get("final", {}).items())
    ran = result.step - result.start_step
    if result.start_step:
        what = f"for {ran} steps (resumed at step {result.start_step}, now at {result.step})"
    else:
        what = f"for {result.step} steps"
    click.echo(f"trained '{result.report['name']}' {what} in {result.report['seconds']:.1f} s of training in all"
               + (f" ({final})" if final else ""), err=True)
    path = Path(result.expert_path)
    values = result.report.get("values")
    arg = f'ckpt.load(path="{path}"' + (f', value="{values[0]}")' if values else ")")
    click.echo(f"expert: {path}\ncompose it with: composer sample '{arg} & ...'", err=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m composer.training``: run ``train_command`` with one-line error messages."""
    from composer.cli import run_command

    return run_command(train_command, argv, "composer train", interrupted="interrupted (resume with --resume OUTPUT)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
