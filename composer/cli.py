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
from composer.generation.command import generate_command

MAX_SEED = 2**63 - 1
"""Largest seed a ``torch.Generator`` accepts."""

EXAMPLES = """
\b
Examples:
  composer list
  composer show "toy.gaussian(mean=[0,0], std=1) & ~toy.ring(radius=2, width=0.3)"
  composer sample "toy.gaussian(mean=[0,0], std=1) & toy.gaussian(mean=[2,0], std=1)" -n 2000 --out s.npz
  composer sample "toy.ring(radius=2, width=0.2) & toy.halfspace(normal=[0,1], offset=0)" --out ring.png
"""


class ComposerGroup(click.Group):
    """The root group: a reader that leaves early (``composer list | head -1``) ends the command quietly, exit 0."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(0) from None


@click.group(cls=ComposerGroup, epilog=EXAMPLES)
@click.version_option(package_name="ebm-composer", prog_name="composer")
@click.option("--threads", type=click.IntRange(min=0), envvar="COMPOSER_THREADS", show_envvar=True, default=None,
              help="CPU threads of torch's operators (default: one per core that other processes leave idle; "
                   "OMP_NUM_THREADS when set; 0: torch's default, one per core). Two threads beside a busy "
                   "process are several times slower than one (benchmarks/README.md, Threads).")
def cli(threads: int | None) -> None:
    """Compose energy-based experts from plugins and sample the composition."""
    _set_threads(threads)


PLUGIN_GROUPS = {
    "eval": "Evaluations of plugins' experts (each plugin adds its own: `composer eval NAME`).",
    "ood": "Out-of-distribution detection protocols of plugins' experts (AUROC per score and OOD set).",
}
"""Subcommand groups that several plugins add to, and their help."""


def plugin_group(root: click.Group, name: str) -> click.Group:
    """The subcommand group ``name`` of ``root`` (``eval``, ``ood``, ...), made on first use.

    For ``register_commands``: ``plugin_group(cli, "eval").add_command(my_eval)`` gives ``composer eval
    mine`` whatever order the plugins load in.
    """
    group = root.commands.get(name)
    if group is None:
        group = click.Group(name, help=PLUGIN_GROUPS.get(name, f"Commands plugins add under '{name}'."))
        root.add_command(group)
    elif not isinstance(group, click.Group):
        raise ComposerError(f"'composer {name}' is a command, not a group a plugin can add to")
    return group


COMPUTING_COMMANDS = frozenset({"sample", "generate", "train", "eval", "inpaint", "score", "ood", "infer", "dataset"})
"""Subcommands whose work is torch's operators: the default thread count is measured for these."""


def _set_threads(threads: int | None) -> None:
    """``torch.set_num_threads``: ``threads`` if given (0: leave torch's default), else one per idle core
    (``composer.threads.idle_now``) for computing commands, unless the user set ``OMP_NUM_THREADS``."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return  # torch already follows it
    if threads == 0:
        return
    import torch

    if not threads:
        if click.get_current_context().invoked_subcommand not in COMPUTING_COMMANDS:
            return  # listing, showing: nothing heavy to run, no probe to pay for
        from composer.threads import idle_now

        threads = idle_now()  # 0.1 s: how many cores other processes leave idle now
    torch.set_num_threads(threads)


cli.add_command(generate_command)


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


@cli.command("list", epilog="\b\nExamples:\n  composer list\n  composer list --params\n  composer list --json")
@click.option("--params", is_flag=True, help="Also show every expert's parameters, with types and defaults.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def list_cmd(params: bool, as_json: bool) -> None:
    """List plugins, experts, concept families with their values, samplers and datasets."""
    from composer.plugins import default_manager
    from composer.registry import factory_parameters

    reg = _registry()
    info = {
        "plugins": default_manager().plugin_names(),
        "experts": {n: {"plugin": e.plugin, "doc": e.doc, "params": factory_parameters(e.factory)}
                    for n, e in sorted(reg.experts.items())},
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
            doc = "  " + plain(entry["doc"]) if entry["doc"] else ""
            click.echo(f"  {name}{values}{doc}  [{entry['plugin']}]")
            if params and "params" in entry:
                for p in entry["params"] or [{"name": "(no parameters)"}]:
                    click.echo("      " + _param_line(p))
    if info["failures"]:
        click.echo("\nbroken plugins (skipped):", err=True)
        for f in info["failures"]:
            click.echo(f"  {f}", err=True)


def _param_line(p: dict[str, Any]) -> str:
    """``name: type = default`` (``(required)`` without a default) of one ``factory_parameters`` entry."""
    if "type" not in p:
        return p["name"]
    kind = f": {p['type']}" if p["type"] else ""
    return f"{p['name']}{kind} = {p['default']}" if "default" in p else f"{p['name']}{kind} (required)"


def plain(text: str) -> str:
    """Help text without reStructuredText marks: ````code```` -> ``code``."""
    return text.replace("``", "")


@cli.command(epilog="""
\b
Examples:
  composer show "toy.gaussian(mean=[0,0], std=1) & 0.5 * ~toy.ring(radius=1, width=0.2)"
  composer show scene --defs scenes.toml
""", context_settings={"ignore_unknown_options": True})
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
    click.echo(recipe_lines(energy))


def recipe_lines(energy: Any) -> str:
    """What ``composer sample`` would run on ``energy`` without options: sampler, steps, step size, ..."""
    from composer.sampling.recipe import DEFAULTS, explain_options

    opts, source = explain_options(energy, True, {k: None for k in DEFAULTS})
    shown = ("sampler", "steps", "step_size", "warmup", "noise", "temperature", "sigmas", "predictor", "init",
             "clamp", "kernel_options")
    lines = ["recipe (what `composer sample` runs without options):"]
    for key in shown:
        value = opts[key]
        if key == "sigmas" and value is not None:
            value = f"{len(value)} levels from {value[0]:.4g} to {value[-1]:.4g}"
        if value is None and source[key] == "default":
            continue
        lines.append(f"  {key:14s} {value}  [{source[key]}]")
    notes = {"smc": "steps are MALA steps at the target after the annealing; the MALA step starts from the "
                    "reference's scale and adapts (a noise ladder's steps start from step_size)",
             "pt": "steps are iterations of all replicas; each replica's MALA step starts from the reference's "
                   "scale and adapts"}
    if opts["sampler"] in notes:
        lines.append(f"  ({opts['sampler']}: {notes[opts['sampler']]})")
    from composer.sampling.strata import strata_of

    for strata in strata_of(energy):
        shares = ", ".join(f"{v} {w:.0%}" for v, w in strata.shares().items())
        lines.append(f"  strata         {strata.family} is free: the chains are shared out as {shares}, each "
                     f"sampling the composition & {strata.family}=VALUE (--no-stratify: one run)")
    return "\n".join(lines)


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
""", context_settings={"ignore_unknown_options": True})
@click.argument("expr")
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Number of samples.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Sampler steps [default: the experts' sampling recipe, else 500 (smc: 20 MALA steps after the "
                   "annealing; pt: 1000 iterations)].")
@click.option("--sampler", default=None,
              help="Sampler (see `composer list`) [default: the experts' recipe; smc when the composition has a "
                   "mixture node or a multi-modal expert and no noise ladder; else langevin]. `composer show EXPR` "
                   "prints the recipe that will run.")
@click.option("--step-size", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Step size [default: the experts' recipe, else 0.01; smc and pt start from the reference's "
                   "scale and adapt it].")
@click.option("--noise", default=None,
              help="'exact' (sqrt(2*step*T)) or a number (IGEBM-style decoupled noise) [default: the recipe, "
                   "else exact].")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Temperature T [default: the recipe, else 1].")
@click.option("--calibrate", is_flag=True,
              help="Weight each branch of a mixture `a | b` by its normaliser (SMC log Z): equal shares of the "
                   "samples instead of shares proportional to each branch's mass.")
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=0, show_default=True,
              help="Random seed in [0, 2^63) (same seed, same samples).")
@click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cpu, cuda, cuda:1.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default="samples.npz", show_default=True,
              help="Output file: .npz (x float32, energy) or .png (picture chosen by the event shape).")
@click.option("--trace", "trace_png", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG of the energy / grad-norm / acceptance trace.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--allow-unbounded", is_flag=True,
              help="Sample a composition whose energy falls without bound (a warning instead of an error).")
@click.option("--no-stratify", "no_stratify", is_flag=True,
              help="One run even where the prior declares a mixture over a family the composition leaves free "
                   "(default: each value gets its share of the chains; `composer show` says when).")
@defs_option
def sample(expr: str, n: int, steps: int | None, sampler: str, step_size: float | None, noise: str | None,
           temperature: float | None, calibrate: bool, seed: int, device: str, out: str, trace_png: str | None,
           quiet: bool, allow_unbounded: bool, no_stratify: bool, defs: str | None) -> None:
    """Draw N samples of the composition EXPR with the shared sampler and write them to --out."""
    import warnings

    out_path = _check_output(out, (".npz", ".png"))
    if trace_png:
        _check_output(trace_png, (".png",))
    dev = _device(device)
    noise_value = _noise(noise)
    energy = _parse(expr, defs)
    _check_size(energy, n, dev)
    from composer.sampling import sample as draw

    if calibrate:
        from composer.algebra import calibrate as calibrated

        energy = calibrated(energy, seed=seed, device=dev)
    # options left at None come from the experts' sampling recipe, else the driver's defaults
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            result = draw(energy, n=n, steps=steps, sampler=sampler, step_size=step_size, noise=noise_value,
                          temperature=temperature, seed=seed, device=dev, progress=not quiet, registry=_registry(),
                          allow_unbounded=allow_unbounded, stratify=not no_stratify)
        finally:
            for w in caught:
                if issubclass(w.category, UserWarning):
                    click.echo(f"composer: warning: {' '.join(str(w.message).split())}", err=True)
    x, e = result.x.detach().cpu(), result.energy.detach().float().cpu()
    if out_path.suffix.lower() == ".npz":
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
    click.echo(f"wrote {n} samples to {out_path} ({sample_summary(x, e)})", err=True)
    if result.log_z is not None:
        click.echo(f"{result.sampler}: log Z = {result.log_z:.4f} +- {result.log_z_se:.4f}", err=True)


def sample_summary(x: Any, energy: Any) -> str:
    """What ``composer sample`` says about its samples ``x: (N, *event)`` with energies ``(N,)``.

    Vectors of up to 4 entries: their mean (the one number worth reading for a 2-D composition);
    anything larger (images): the shape and the value range. Always the mean energy.
    """
    x = x.float()
    shape = "x".join(str(d) for d in x.shape[1:])
    if x[0].numel() <= 4:
        what = "mean [" + ", ".join(f"{v:.3f}" for v in x.flatten(1).mean(0).tolist()) + "]"
    else:
        what = f"shape {shape}, range [{x.min().item():.3g}, {x.max().item():.3g}]"
    return f"{what}, mean energy {energy.float().mean().item():.4g}"


@cli.command(epilog="""
\b
Examples:
  composer dataset shapes -n 10000 --split train --seed 0 --out train.npz
  composer dataset shapes -n 512 --split heldout --out heldout.npz
""")
@click.argument("name")
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=None, help="Number of examples.")
@click.option("--split", default=None, help="Split, for datasets that have splits (e.g. train, heldout, all).")
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=None,
              help="Random seed of the generator, in [0, 2^63).")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Output .npz file.")
def dataset(name: str, n: int | None, split: str | None, seed: int | None, out: str) -> None:
    """Generate or export the registered dataset NAME to an .npz file (arrays + JSON metadata)."""
    out_path = _check_output(out, (".npz",))
    loader = _registry().dataset(name).obj
    options = {k: v for k, v in {"n": n, "split": split, "seed": seed}.items() if v is not None}
    _check_options(loader, options, f"dataset '{name}'")
    try:
        data = loader(**options)
    except ComposerError:
        raise
    except (Exception, MemoryError) as exc:  # a plugin's loader failing on these options (or out of memory)
        shown = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "no options"
        raise ComposerError(f"dataset '{name}' failed with {shown}: {type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:300]}") from None
    if not isinstance(data, dict):
        raise ComposerError(f"dataset '{name}' returned {type(data).__name__}, not a dict of arrays with 'x'")
    data = dict(data)
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

    from composer.inference import concept_energies
    from composer.sampling.guard import check_experts, check_inputs

    reg = _registry()
    info = reg.concept(family)
    expert = reg.make_concept(family, info.values[0])
    array = _load_array(file)
    if limit:
        array = array[:limit] if array.ndim else array
    x = check_inputs(array, expert.event_shape, expert.domain, file)
    if x.shape[0]:
        check_experts(expert, x[:2])
    values, energies = concept_energies(reg, family, x)
    best = energies.argmin(dim=1)
    if as_json:
        click.echo(json.dumps({"values": values, "prediction": [values[i] for i in best.tolist()],
                               "energies": energies.tolist()}))
        return
    for i, k in enumerate(best.tolist()):
        click.echo(f"{i}\t{values[k]}\t" + " ".join(f"{v}={e:.3f}" for v, e in zip(values, energies[i].tolist())))


def _load_array(path: str):
    import zipfile

    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise ComposerError(f"no such file: '{path}'")
    try:
        if p.suffix.lower() == ".npy":
            return np.load(p, allow_pickle=False)
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as data:
                if "x" not in data:
                    raise ComposerError(f"'{path}' has no array named 'x' (found: {', '.join(data.files)})")
                return data["x"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ComposerError(f"cannot read '{path}': {reason}") from None
    raise ComposerError(f"'{path}' must be an .npz (with an array 'x') or .npy file")


def check_output(path: str | Path, suffixes: tuple[str, ...]) -> Path:
    """Check, before any work, that ``path`` can be written: a known suffix (any case), an existing,
    writable folder, and not a folder itself. Returns the path.

    Raises:
        ComposerError: naming what is wrong.
    """
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ComposerError(f"output '{path}' must end in {' or '.join(suffixes)}")
    if p.is_dir():
        raise ComposerError(f"output '{path}' is a folder; give a file name ending in {' or '.join(suffixes)}")
    check_writable_folder(p.parent)
    return p


def check_writable_folder(folder: str | Path, create: bool = False) -> Path:
    """Check that files can be created in ``folder`` (by creating and removing one).

    Args:
        folder: the folder.
        create: the folder may not exist yet; then its nearest existing ancestor must be writable.

    Raises:
        ComposerError: the folder (or, with ``create``, every ancestor) is missing or not writable.
    """
    import tempfile

    folder = Path(folder)
    probe = folder
    if create:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
    if not probe.exists():
        raise ComposerError(f"output folder '{folder}' does not exist")
    if not probe.is_dir():
        raise ComposerError(f"output folder '{probe}' is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".composer-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ComposerError(f"cannot write in output folder '{probe}': {exc.strerror or exc}") from None
    return folder


_check_output = check_output


def _device(name: str):
    from composer.devices import check_device

    return check_device(name)


def _check_size(energy: Any, n: int, dev: Any) -> None:
    """Refuse, before allocating, a number of chains whose state cannot fit in memory."""
    from composer.devices import available_memory

    shape = getattr(energy, "event_shape", None)
    if shape is None:
        return
    numel = 1
    for s in shape:
        numel *= int(s)
    need = n * numel * 4 * 6  # float32 positions, gradients, proposal, noise and two temporaries
    have = available_memory(dev)
    if have is not None and need > have:
        raise ComposerError(f"-n {n} needs about {need / 2**30:.3g} GiB for the chains of shape {tuple(shape)}; "
                            f"{dev} has {have / 2**30:.3g} GiB: draw fewer samples per run")


def _check_options(fn: Any, options: dict[str, Any], what: str) -> None:
    """Every option must be a keyword that ``fn`` accepts."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in options:
        if key not in accepted:
            flag = {"n": "-n"}.get(key, f"--{key}")
            raise ComposerError(f"{what} takes no {flag} (its options: {', '.join(accepted) or 'none'})")


def _write_npz(path: Path, **arrays: Any) -> None:
    """Write an .npz atomically (temp file in the same folder + rename)."""
    import numpy as np

    from composer.atomic import atomic_write

    with atomic_write(path) as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def _add_plugin_commands() -> None:
    from composer.plugins import default_manager

    default_manager().add_commands(cli)
    plain_help(cli)


def plain_help(command: click.Command) -> None:
    """Strip reStructuredText marks from the help of ``command`` and its subcommands (plugins' too).

    Docstrings use ````code```` for Sphinx-style readers; a terminal shows ``code``.
    """
    for attr in ("help", "short_help", "epilog"):
        text = getattr(command, attr, None)
        if isinstance(text, str):
            setattr(command, attr, plain(text))
    for param in command.params:
        if isinstance(getattr(param, "help", None), str):
            param.help = plain(param.help)
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush of a closed pipe stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests capture it)
        pass


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
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return 0
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo(f"{prog_name}: {interrupted}", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BrokenPipeError:  # `composer list | head -1`: the reader left; not an error
        _silence_stdout()
        return 0
    except click.ClickException as exc:  # usage errors too: one line, not click's three
        click.echo(f"{prog_name}: error: {' '.join(exc.format_message().split())}", err=True)
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
