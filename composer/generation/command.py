"""The ``composer generate`` command (registered in ``composer.cli``); also ``python -m composer generate``."""

from __future__ import annotations

import click

EPILOG = """
\b
Examples:
  composer generate "toy.gaussian(mean=[0,0], std=1)" -n 10000 --shard-size 2000 --out gauss
  composer generate plan.toml --out shapes96 --seed 1            # a plan: compositions, counts, labels
  composer generate plan.toml --out shapes96 --seed 1            # again: resumes, skips finished shards
  composer generate --verify shapes96                            # sizes and sha256 of every shard
  torchrun --nproc-per-node 2 -m composer generate plan.toml --out shapes96
"""


@click.command("generate", epilog=EPILOG)
@click.argument("source", required=False, metavar="EXPR|PLAN.toml")
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=None,
              help="Samples of EXPR; with a plan, the count of entries that give none.")
@click.option("--out", "out", type=click.Path(), default=None, metavar="DIR",
              help="Dataset folder (created, or resumed).")
@click.option("--shard-size", type=click.IntRange(min=1), default=1024, show_default=True, help="Samples per shard.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the dataset.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Sampler steps [default: the recipe's].")
@click.option("--sampler", default=None, help="Sampler kernel [default: the recipe's, else langevin].")
@click.option("--step-size", type=click.FloatRange(min=0, min_open=True), default=None, help="Step size.")
@click.option("--noise", default=None, help="'exact' or a number (IGEBM-style decoupled noise).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None, help="Temperature T.")
@click.option("--levels", type=click.IntRange(min=1), default=None,
              help="Budget: noise levels (re-spaces the recipe's ladder between its ends).")
@click.option("--steps-per-level", type=click.IntRange(min=1), default=None, help="Budget: steps at each level.")
@click.option("--clip/--no-clip", default=True, show_default=True,
              help="Clamp samples to the composition's domain before writing.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda (one GPU per torchrun rank), cuda:1...")
@click.option("--defs", type=click.Path(dir_okay=False), default=None, help="TOML file of named sub-compositions.")
@click.option("--verify", "verify_dir", type=click.Path(), default=None, metavar="DIR",
              help="Only check every shard of DIR (size and sha256) and exit.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def generate_command(source: str | None, n: int | None, out: str | None, shard_size: int, seed: int,
                     steps: int | None, sampler: str | None, step_size: float | None, noise: str | None,
                     temperature: float | None, levels: int | None, steps_per_level: int | None, clip: bool,
                     device: str, defs: str | None, verify_dir: str | None, quiet: bool) -> None:
    """Sample EXPR (or every composition of PLAN.toml) into a folder of shards and an index.json."""
    from composer.cli import _device, _noise
    from composer.generation import generate, verify

    if verify_dir is not None:
        if source is not None or out is not None:
            raise click.UsageError("--verify DIR takes no EXPR or --out")
        index = verify(verify_dir)
        click.echo(f"verified {verify_dir}: {index['num_shards']} shards, {index['num_samples']} samples "
                   f"(sizes and sha256 match index.json)", err=True)
        return
    if source is None or out is None:
        raise click.UsageError("give EXPR or PLAN.toml and --out DIR (or --verify DIR)")
    result = generate(source, out, n, shard_size=shard_size, seed=seed, steps=steps, sampler=sampler,
                      step_size=step_size, noise=_noise(noise), temperature=temperature, levels=levels,
                      steps_per_level=steps_per_level, clip=clip, device=_device(device), defs=defs,
                      progress=not quiet)
    if result.rank == 0:
        index = result.index
        made = sum(index["shards"][i]["count"] for i in result.made)
        rate = f", {made / result.seconds:.1f} samples/s" if made else ""
        who = f"rank 0 of {result.world_size}: " if result.world_size > 1 else ""
        click.echo(f"wrote {out}: {index['num_samples']} samples in {index['num_shards']} shards "
                   f"({who}{len(result.made)} made, {len(result.skipped)} already done{rate})", err=True)
