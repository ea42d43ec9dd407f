"""The ``composer`` command line: list, show, sample; plugins add subcommands via a hook.

Bad input never shows a traceback: every ``ComposerError`` (and click's usage errors) is
printed as one message and the command exits non-zero. ``COMPOSER_DEBUG=1`` shows
tracebacks of unexpected errors.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from composer.errors import ComposerError

EXAMPLES = """
\b
Examples:
  composer list
  composer show "toy.gaussian(mean=[0,0], std=1) & ~toy.ring(radius=2, width=0.3)"
  composer sample "toy.gaussian(mean=[0,0], std=1) & toy.gaussian(mean=[2,0], std=1)" -n 2000 --out s.npz
  composer sample "toy.ring(radius=2, width=0.2) & toy.halfspace(normal=[0,1], offset=0)" --out ring.png
"""


@click.group(epilog=EXAMPLES)
@click.version_option(package_name="ebm-composer", prog_name="composer")
@click.option("--threads", type=click.IntRange(min=0), envvar="COMPOSER_THREADS", show_envvar=True, default=None,
              help="CPU threads of torch's operators (default: 1, or OMP_NUM_THREADS when set; 0: torch's "
                   "default, one per core). One thread is never much slower for these small networks and is "
                   "several times faster on a busy machine (benchmarks/README.md, Threads).")
def cli(threads: int | None) -> None:
    """Compose energy-based experts from plugins and sample the composition."""
    _set_threads(threads)


def _set_threads(threads: int | None) -> None:
    """``torch.set_num_threads``: ``threads`` if given (0: leave torch's default), else 1 unless the user set
    ``OMP_NUM_THREADS``."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return  # torch already follows it
    if threads == 0:
        return
    import torch

    torch.set_num_threads(threads or 1)


def _registry():
    from composer.plugins import get_registry

    return get_registry()


def _parse(expr: str, defs: str | None):
    from composer.compositions import read_definitions
    from composer.language import parse

    definitions = read_definitions(defs) if defs else None
    return parse(expr, registry=_registry(), definitions=definitions)


defs_option = click.option(
    "--defs", type=click.Path(dir_okay=False), default=None,
    help="TOML file of named sub-compositions usable by name in EXPR.",
)


@cli.command("list", epilog="\b\nExamples:\n  composer list\n  composer list --json")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def list_cmd(as_json: bool) -> None:
    """List plugins, experts, concept families with their values, samplers and datasets."""
    from composer.plugins import default_manager

    reg = _registry()
    info = {
        "plugins": default_manager().plugin_names(),
        "experts": {n: {"plugin": e.plugin, "doc": e.doc} for n, e in sorted(reg.experts.items())},
        "concepts": {n: {"plugin": c.plugin, "values": list(c.values), "doc": c.doc}
                     for n, c in sorted(reg.concepts.items())},
        "samplers": {n: {"plugin": s.plugin, "doc": s.doc} for n, s in sorted(reg.samplers.items())},
        "datasets": {n: {"plugin": d.plugin, "doc": d.doc} for n, d in sorted(reg.datasets.items())},
        "failures": [str(f) for f in reg.failures],
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo("plugins: " + (", ".join(info["plugins"]) or "none"))
    for section in ("experts", "concepts", "samplers", "datasets"):
        click.echo(f"\n{section}:")
        if not info[section]:
            click.echo("  (none)")
        for name, entry in info[section].items():
            values = f" = {{{', '.join(entry['values'])}}}" if "values" in entry else ""
            doc = "  " + entry["doc"].replace("``", "") if entry["doc"] else ""
            click.echo(f"  {name}{values}{doc}  [{entry['plugin']}]")
    if info["failures"]:
        click.echo("\nbroken plugins (skipped):", err=True)
        for f in info["failures"]:
            click.echo(f"  {f}", err=True)


@cli.command(epilog="""
\b
Examples:
  composer show "toy.gaussian(mean=[0,0], std=1) & 0.5 * ~toy.ring(radius=1, width=0.2)"
  composer show scene --defs scenes.toml
""")
@click.argument("expr")
@defs_option
def show(expr: str, defs: str | None) -> None:
    """Parse EXPR and print its formula and tree with weights."""
    from composer.algebra import describe

    energy = _parse(expr, defs)
    click.echo(f"formula: {energy.formula()}")
    domain = energy.domain
    if domain is not None:
        click.echo(f"domain:  [{_short(domain[0])}, {_short(domain[1])}]")
    click.echo(describe(energy))


def _short(t: Any) -> str:
    t = t.detach().cpu()
    return f"{t.item():g}" if t.numel() == 1 else str(t.flatten()[:4].tolist()) + ("..." if t.numel() > 4 else "")


def _noise(value: str | None) -> Any:
    if value is None or value == "exact":
        return value
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is neither 'exact' nor a number", param_hint="--noise") from None


@cli.command(epilog="""
\b
Examples:
  composer sample "toy.gaussian(mean=[0,0], std=1) & toy.gaussian(mean=[2,0], std=1)" -n 2000 --out s.npz
  composer sample "toy.mixture(means=[[-2,0],[2,0]], std=0.5)" --sampler mala --steps 2000 --out mix.png
  composer sample scene --defs scenes.toml --seed 1 --out scene.png --trace trace.png
""")
@click.argument("expr")
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Number of samples.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Sampler steps [default: the experts' sampling recipe, else 500].")
@click.option("--sampler", default=None,
              help="Sampler kernel (see `composer list`) [default: the experts' recipe, else langevin].")
@click.option("--step-size", type=click.FloatRange(min=0, min_open=True), default=None, help="Step size.")
@click.option("--noise", default=None, help="'exact' (sqrt(2*step*T)) or a number (IGEBM-style decoupled noise).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None, help="Temperature T.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same samples).")
@click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cpu, cuda, cuda:1.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default="samples.npz", show_default=True,
              help="Output file: .npz (x float32, energy) or .png (picture chosen by the event shape).")
@click.option("--trace", "trace_png", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG of the energy / grad-norm / acceptance trace.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@defs_option
def sample(expr: str, n: int, steps: int | None, sampler: str, step_size: float | None, noise: str | None,
           temperature: float | None, seed: int, device: str, out: str, trace_png: str | None, quiet: bool,
           defs: str | None) -> None:
    """Draw N samples of the composition EXPR with the shared sampler and write them to --out."""
    out_path = _check_output(out, (".npz", ".png"))
    if trace_png:
        _check_output(trace_png, (".png",))
    dev = _device(device)
    energy = _parse(expr, defs)
    from composer.sampling import sample as draw

    # options left at None come from the experts' sampling recipe, else the driver's defaults
    result = draw(energy, n=n, steps=steps, sampler=sampler, step_size=step_size, noise=_noise(noise),
                  temperature=temperature, seed=seed, device=dev, progress=not quiet, registry=_registry())
    x, e = result.x.detach().cpu(), result.energy.detach().float().cpu()
    if out_path.suffix == ".npz":
        _write_npz(out_path, x=x.float().numpy(), energy=e.numpy(), expression=expr, formula=energy.formula(),
                   seed=seed)
    else:
        from composer.figures import save_samples_png

        energy_cpu = energy.to("cpu")
        save_samples_png(x, out_path, energy_fn=energy_cpu if x.dim() == 2 else None, title=energy.formula())
    if trace_png:
        from composer.figures import save_trace_png

        save_trace_png({k: v.detach().cpu() for k, v in result.trace.items() if v is not None}, trace_png,
                       title=energy.formula())
    mean = x.float().flatten(1).mean(0)
    shown = ", ".join(f"{v:.3f}" for v in mean[:4].tolist()) + (", ..." if mean.numel() > 4 else "")
    click.echo(f"wrote {n} samples to {out_path} (mean [{shown}], mean energy {e.mean().item():.4g})", err=True)


@cli.command(epilog="""
\b
Examples:
  composer dataset shapes -n 10000 --split train --seed 0 --out train.npz
  composer dataset shapes -n 512 --split heldout --out heldout.npz
""")
@click.argument("name")
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=None, help="Number of examples.")
@click.option("--split", default=None, help="Split, for datasets that have splits (e.g. train, heldout, all).")
@click.option("--seed", type=int, default=None, help="Random seed of the generator.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Output .npz file.")
def dataset(name: str, n: int | None, split: str | None, seed: int | None, out: str) -> None:
    """Generate or export the registered dataset NAME to an .npz file (arrays + JSON metadata)."""
    out_path = _check_output(out, (".npz",))
    loader = _registry().dataset(name).obj
    options = {k: v for k, v in {"n": n, "split": split, "seed": seed}.items() if v is not None}
    data = dict(loader(**options))
    meta = data.pop("meta", {})
    if "x" not in data:
        raise ComposerError(f"dataset '{name}' returned no 'x' array")
    _write_npz(out_path, **data, meta=json.dumps(meta))
    shapes = ", ".join(f"{k} {tuple(getattr(v, 'shape', ()))}" for k, v in data.items())
    click.echo(f"wrote {out_path}: {shapes}", err=True)


@cli.command(epilog="""
\b
Examples:
  composer infer images.npz --family shapes.color
  composer infer images.npz --family shapes.shape --json
""")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--family", required=True, help="Concept family, e.g. shapes.color.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (values and per-value energies).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N inputs.")
def infer(file: str, family: str, as_json: bool, limit: int | None) -> None:
    """Print, for each input in FILE (.npz with x, or .npy), the family's value of lowest energy."""
    import torch

    from composer.inference import concept_energies

    x = torch.as_tensor(_load_array(file), dtype=torch.float32)
    if limit:
        x = x[:limit]
    values, energies = concept_energies(_registry(), family, x)
    best = energies.argmin(dim=1)
    if as_json:
        click.echo(json.dumps({"values": values, "prediction": [values[i] for i in best.tolist()],
                               "energies": energies.tolist()}))
        return
    for i, k in enumerate(best.tolist()):
        click.echo(f"{i}\t{values[k]}\t" + " ".join(f"{v}={e:.3f}" for v, e in zip(values, energies[i].tolist())))


def _load_array(path: str):
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise ComposerError(f"no such file: '{path}'")
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                if "x" not in data:
                    raise ComposerError(f"'{path}' has no array named 'x' (found: {', '.join(data.files)})")
                return data["x"]
    except (ValueError, OSError) as exc:
        raise ComposerError(f"cannot read '{path}': {exc}") from None
    raise ComposerError(f"'{path}' must be an .npz (with an array 'x') or .npy file")


def _check_output(path: str, suffixes: tuple[str, ...]) -> Path:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ComposerError(f"output '{path}' must end in {' or '.join(suffixes)}")
    if not p.parent.exists():
        raise ComposerError(f"output folder '{p.parent}' does not exist")
    return p


def _device(name: str):
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ComposerError(f"unknown device '{name}' (use cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ComposerError(f"device '{name}' requested but CUDA is not available on this machine")
    return dev


def _write_npz(path: Path, **arrays: Any) -> None:
    """Write an .npz atomically (temp file in the same folder + rename)."""
    import numpy as np

    from composer.atomic import atomic_write

    with atomic_write(path) as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def _add_plugin_commands() -> None:
    from composer.plugins import default_manager

    default_manager().add_commands(cli)


def run_command(
    command: click.Command,
    argv: list[str] | None,
    prog_name: str,
    setup: Any = None,
    interrupted: str = "interrupted",
) -> int:
    """Run a click ``command`` so that bad input is one line on stderr, never a traceback.

    Args:
        command: the click command or group.
        argv: arguments (default: ``sys.argv[1:]``).
        prog_name: the name used in messages.
        setup: optional callable run first, inside the same error handling.
        interrupted: what to say after Ctrl-C.

    Returns:
        The exit code: 0, 1 (a ``ComposerError``, an internal error), 2 (usage), 130 (interrupted).
    """
    debug = os.environ.get("COMPOSER_DEBUG") == "1"
    try:
        if setup is not None:
            setup()
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
        return 0
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo(f"{prog_name}: {interrupted}", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except ComposerError as exc:
        if debug:
            raise
        click.echo(f"{prog_name}: error: {exc}", err=True)
        return 1
    except Exception as exc:  # an unexpected failure: still one line, with a way to see more
        if debug:
            raise
        click.echo(f"{prog_name}: internal error: {type(exc).__name__}: {exc} (set COMPOSER_DEBUG=1 for details)",
                   err=True)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``composer`` console script; returns the exit code."""
    return run_command(cli, argv, "composer", setup=_add_plugin_commands)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
