"""``composer eval shapes``: the compositional-generation evaluation of the shapes experts.

The protocol (Du, Li & Mordatch 2020, scaled to a CPU):

1. The independent judge (``composer_shapes.classifier``, shipped weights) is checked on fresh real
   images; below 98% on any attribute the evaluation is void and says so.
2. ``n`` samples (default 64) are drawn with the shipped experts and the family recipe for every
   single value, every colour & shape pair (seen and held-out reported apart), a fixed set of
   colour & shape & position triples, a fixed set of four-attribute compositions, the negation
   ``red & ~triangle`` and the README's main job ``red & triangle & ~top_left``. A sample counts only if
   every condition is judged satisfied (a negated value: judged some *other* value of its attribute; "none
   of the values" never counts).
3. The monolithic baseline (one posterior over (shape, colour) pairs on the whole image, trained on the
   same ``train`` split, ``weights/baseline.safetensors``, over the same prior) is sampled for the same pairs.
4. Concept inference: the share of fresh real images whose lowest-energy value is the true one.
5. Diversity: for every composition, the judged distribution of its free attributes against the world's
   uniform one (total variation) and the share of off-world sizes and colours; fidelity: the share of
   samples that the world's renderer fits with soft IoU >= 0.95 and that show one object
   (``composer_shapes.fidelity``).
6. A PNG: one row per composition (seen pairs, held-out pairs, triples, negation, baseline).

Every composition is sampled exactly as written (``composer_shapes.compose.compose``): the values share
the prior, which the engine counts once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import torch

from composer import Energy, SamplingDivergedError
from composer.atomic import atomic_write_text
from composer_shapes import classifier
from composer_shapes.compose import Condition, compose, conditions
from composer_shapes.data import HELDOUT_PAIRS, generate
from composer_shapes.experts import FAMILIES, GUIDANCE, family, load_network, prior
from composer_shapes.fidelity import fidelity
from composer_shapes.recipe import recipe_for_family, sample
from composer_shapes.world import ATTRIBUTES, IMAGE_SHAPE

TRIPLES = [("red", "triangle", "bottom_right"), ("green", "circle", "top_left"), ("blue", "square", "top_right"),
           ("yellow", "triangle", "bottom_left"), ("red", "square", "top_left"), ("green", "triangle", "bottom_right"),
           ("blue", "circle", "bottom_left"), ("yellow", "circle", "top_right")]
QUADS = [("red", "triangle", "large", "top_right"), ("green", "circle", "small", "bottom_left"),
         ("blue", "square", "large", "bottom_right"), ("yellow", "square", "small", "top_left"),
         ("red", "circle", "small", "top_right"), ("green", "square", "large", "top_left"),
         ("blue", "triangle", "small", "bottom_right"), ("yellow", "triangle", "large", "bottom_left")]
NEGATIONS = [(("color", "red", False), ("shape", "triangle", True))]


def diversity(pred: dict[str, torch.Tensor], conds: list[Condition]) -> dict[str, Any]:
    """How faithfully samples spread over their *free* attributes (judge's labels ``pred``).

    An attribute no condition fixes is free: the world is uniform over its values (over the values not
    negated, e.g. three positions for ``~top_left``), so the composition's exact conditional is too (the
    attributes are independent in the world). Returns the total variation distance between the judged
    distribution and that uniform one per free attribute (a label outside the allowed values, or "none",
    counts fully against it), the judged distribution, and the share of samples judged an off-world
    ("none") size and colour.
    """
    fixed = {c.attribute for c in conds if not c.negated}
    out: dict[str, Any] = {"tv": {}, "distribution": {}}
    for attribute, values in ATTRIBUTES.items():
        if attribute in fixed:
            continue
        allowed = [i for i, v in enumerate(values) if not any(c.attribute == attribute and c.value == v for c in conds)]
        labels = pred[attribute]
        share = [float((labels == i).double().mean()) for i in range(len(values))]
        outside = 1.0 - sum(share[i] for i in allowed)
        out["tv"][attribute] = 0.5 * (sum(abs(share[i] - 1 / len(allowed)) for i in allowed) + outside)
        out["distribution"][attribute] = dict(zip(values, share))
    for attribute in ("size", "color"):
        out[f"offworld_{attribute}"] = float((pred[attribute] == classifier.NONE).double().mean())
    out["max_tv"] = max(out["tv"].values(), default=0.0)
    return out


def judge(x: torch.Tensor, conds: list[Condition], pred: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``(N,)`` bool: every condition judged satisfied by the classifier."""
    pred = classifier.classify(x) if pred is None else pred
    ok = torch.ones(x.shape[0], dtype=torch.bool)
    for c in conds:
        p = pred[c.attribute]
        hit = p == ATTRIBUTES[c.attribute].index(c.value)
        ok &= (~hit & (p >= 0)) if c.negated else hit
    return ok


_BASELINE: list[Any] = []


def baseline_energy(shape: str, color: str) -> Energy:
    """The monolithic baseline's expert for the pair ``(shape, color)``: ``E_prior - g log p(pair | x)``.

    One posterior over the 12 (shape, colour) pairs on the whole image (``weights/baseline.safetensors``,
    trained on the ``train`` split, so a held-out pair is a class it never saw), over the same prior and
    with the same recipe as the composed experts; its guidance is the larger of the colour and shape
    families' (condition ``shape * 4 + color``).
    """
    from composer import ConditionalEnergy

    if not _BASELINE:
        _BASELINE.append(load_network(Path(__file__).parent / "weights" / "baseline.safetensors")[0])
    cond = ATTRIBUTES["shape"].index(shape) * len(ATTRIBUTES["color"]) + ATTRIBUTES["color"].index(color)
    guidance = max(GUIDANCE["shapes.color"], GUIDANCE["shapes.shape"])
    e = ConditionalEnergy(_BASELINE[0], torch.tensor(cond), IMAGE_SHAPE, (0.0, 1.0), f"baseline={color}_{shape}",
                          noise_conditional=True, base=prior(), guidance=guidance)
    e.sampling_recipe = recipe_for_family("baseline").as_kwargs()
    e.families = ("shapes.shape", "shapes.color")  # it fixes the colour: no colour strata
    return e


def concept_inference(n: int, seed: int) -> dict[str, float]:
    """Share of ``n`` fresh ``all``-split images whose lowest-energy value is the true one, per family.

    The values share the prior, which cannot change the argmin: only their likelihood parts are evaluated.
    """
    data = generate(n, "all", seed)
    x = torch.from_numpy(data["x"])
    out = {}
    with torch.no_grad():
        for name, attribute in FAMILIES.items():
            experts = list(family(name).values())
            energies = torch.stack([e.likelihood(x, None) for e in experts], dim=1)
            out[name] = float((energies.argmin(1).numpy() == data[attribute]).mean())
    return out


def evaluate(n: int = 64, seed: int = 0, figure: str | Path | None = None, columns: int = 8,
             progress: bool = True, only: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Run the whole protocol; returns the results as JSON-able data (and writes ``figure`` if given).

    Args:
        n: samples per composition.
        seed: seed of the first composition (each composition gets ``seed + its index``).
        figure: PNG path of the figure (rows = compositions, ``columns`` samples each).
        progress: print one line per composition on stderr (accuracy, fidelity, free attributes' TV).
        only: evaluate only these compositions (labels, comma-separated, e.g. ``"red & triangle,circle"``).
        overrides: ``composer.sample`` keyword arguments replacing the recipe's (e.g. ``steps``).
    """
    start = time.time()
    judge_acc = classifier.accuracy(n=1000, seed=seed + 12345)
    results: dict[str, Any] = {"n": n, "seed": seed, "classifier_accuracy": judge_acc,
                               "void": any(v < 0.98 for v in judge_acc.values()), "groups": {}, "diverged": [],
                               "diversity": {}, "fidelity": {}, "outside_unit_interval": {}}
    if progress:
        click.echo(f"judge on real images: {', '.join(f'{k} {v:.1%}' for k, v in judge_acc.items())}", err=True)
    rows: list[tuple[str, torch.Tensor]] = []
    heldout = {(s, c) for s, c in HELDOUT_PAIRS}
    groups: dict[str, list[tuple[str, list[Condition], Any]]] = {
        "single": [(v, conditions(v), None) for vs in ATTRIBUTES.values() for v in vs],
        "pair_seen": [], "pair_heldout": [], "triple": [], "four": [], "negation": [],
        "baseline_pair_seen": [], "baseline_pair_heldout": [],
    }
    for s in ATTRIBUTES["shape"]:
        for c in ATTRIBUTES["color"]:
            kind = "heldout" if (s, c) in heldout else "seen"
            groups[f"pair_{kind}"].append((f"{c} & {s}", conditions(c, s), None))
            groups[f"baseline_pair_{kind}"].append((f"baseline {c} {s}", conditions(c, s), (s, c)))
    groups["triple"] = [(" & ".join(t), conditions(*t), None) for t in TRIPLES]
    groups["four"] = [(" & ".join(q), conditions(*q), None) for q in QUADS]
    groups["negation"] = [(" & ".join(("~" if neg else "") + v for _, v, neg in spec),
                           [Condition(a, v, neg) for a, v, neg in spec], None) for spec in NEGATIONS]
    groups["main"] = [("red & triangle & ~top_left", conditions("red", "triangle", "~top_left"), None)]
    if only is not None:
        wanted = [w.strip() for w in only.split(",")]
        groups = {g: [item for item in items if any(w == item[0] for w in wanted)] for g, items in groups.items()}
        groups = {g: items for g, items in groups.items() if items}
    index, count = 0, sum(len(items) for items in groups.values())
    for group, items in groups.items():
        table = {}
        for label, conds, pair in items:
            energy = baseline_energy(*pair) if pair else compose(conds)
            t0 = time.time()
            try:
                x = sample(energy, n=n, seed=seed + index, **overrides).x
            except SamplingDivergedError:  # counts as all wrong, and is reported
                results["diverged"].append(label)
                x = torch.zeros(n, *IMAGE_SHAPE)
            index += 1
            pred = classifier.classify(x)
            acc = float(judge(x, conds, pred).float().mean())
            table[label] = acc
            results["outside_unit_interval"][label] = float(((x < 0) | (x > 1)).double().mean())
            div = results["diversity"][label] = diversity(pred, conds)
            fid = results["fidelity"][label] = fidelity(x)
            if progress:
                tv = " ".join(f"{a[:3]} {v:.2f}" for a, v in div["tv"].items())
                click.echo(f"[{index:2d}/{count}] {group:21s} {label:38s} {acc:6.1%}  faithful {fid['faithful']:5.1%}"
                           f"  tv {tv or '-'}  ({time.time() - t0:.1f} s)", err=True)
            if group in ("pair_seen", "pair_heldout", "triple", "negation", "baseline_pair_heldout", "four", "main"):
                rows.append((f"{label}  {acc:.0%}", x[:columns]))
        results["groups"][group] = {"accuracy": table, "mean": sum(table.values()) / len(table)}
    results["concept_inference"] = concept_inference(1000, seed + 999)
    results["seconds"] = round(time.time() - start, 1)
    if figure is not None:
        save_figure(rows, figure)
    return results


def save_figure(rows: list[tuple[str, torch.Tensor]], path: str | Path) -> None:
    """One row of samples per composition, labelled on the left."""
    from composer.figures import _pyplot, image_grid, save_figure_png

    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(7.5, 0.62 * len(rows) + 0.3), squeeze=False)
    for ax, (label, x) in zip(axes[:, 0], rows):
        ax.imshow(image_grid(x, nrow=x.shape[0]))
        ax.set_axis_off()
        ax.text(-0.02, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(left=0.36, right=0.99, top=0.995, bottom=0.005, hspace=0.08)
    save_figure_png(plt, fig, path, dpi=110)


@click.command("shapes", epilog="\b\nExamples:\n  composer eval shapes\n"
                    "  composer eval shapes -n 16 --json results.json --figure eval.png")
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=64, show_default=True,
              help="Samples per composition.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--steps-per-level", type=click.IntRange(min=1), default=None, help="Override the recipe.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default="shapes_eval.json", show_default=True,
              help="Where to write the results (JSON).")
@click.option("--figure", type=click.Path(dir_okay=False), default="shapes_eval.png", show_default=True,
              help="Where to write the figure (PNG).")
@click.option("--only", default=None,
              help="Only these compositions, comma-separated labels (e.g. 'red & triangle & ~top_left,circle').")
def eval_shapes(n: int, seed: int, steps_per_level: int | None, json_out: str, figure: str,
                only: str | None) -> None:
    """Generate compositions with the shipped shapes experts and judge them with the independent classifier."""
    from composer.cli import check_output

    check_output(json_out, (".json",))  # before the minutes of work
    check_output(figure, (".png",))
    overrides = {}
    if steps_per_level is not None:
        r = recipe_for_family("shapes.color").replace(steps_per_level=steps_per_level)
        overrides = {"steps": r.levels * r.steps_per_level}
    results = evaluate(n=n, seed=seed, figure=figure, only=only, **overrides)
    atomic_write_text(json_out, json.dumps(results, indent=2))
    click.echo(summary(results))


def summary(results: dict[str, Any]) -> str:
    """A short text table of ``evaluate``'s results."""
    judged = results["classifier_accuracy"].items()
    lines = ["classifier on real images: " + ", ".join(f"{k} {v:.1%}" for k, v in judged)]
    if results["void"]:
        lines.append("EVALUATION VOID: the classifier is below 98% on some attribute")
    for group, r in results["groups"].items():
        lines.append(f"{group:22s} {r['mean']:6.1%}")
    if results.get("diversity"):
        lines.append("diversity (free attributes' TV distance to the world's uniform; off-world size/colour) and "
                     "fidelity (share with renderer-fit soft IoU >= 0.95 and one object):")
        lines.append(f"  {'composition':40s} {'max TV':>6s} {'off size':>8s} {'off col':>7s} {'faithful':>8s}"
                     "  TV per attribute")
        for label, d in results["diversity"].items():
            f = results["fidelity"][label]
            tv = ", ".join(f"{a} {v:.2f}" for a, v in d["tv"].items())
            lines.append(f"  {label:40s} {d['max_tv']:6.2f} {d['offworld_size']:8.1%} {d['offworld_color']:7.1%} "
                         f"{f['faithful']:8.1%}  {tv}")
        outside = max(results["outside_unit_interval"].values(), default=0.0)
        lines.append(f"  sample values outside [0, 1]: {outside:.2%} (largest share over compositions)")
    if results.get("diverged"):
        lines.append("diverged (counted as wrong): " + ", ".join(results["diverged"]))
    lines.append("concept inference: " + ", ".join(f"{k} {v:.1%}" for k, v in results["concept_inference"].items()))
    return "\n".join(lines)
