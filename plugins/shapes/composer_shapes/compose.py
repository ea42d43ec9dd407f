"""Turning a composition of shapes values into an energy over whole images.

Each family's expert models only its view (``composer_shapes.experts``), so a composition is completed
before sampling (``prepare``):

- a *covering* family (colour, shape: together they cover every pixel) that the composition names no
  positive value of is added as its marginal, the mixture of its values: ``triangle`` is sampled as
  ``triangle & (red | green | blue | yellow)``;
- a family with negated values and no positive value is replaced by the mixture of its *other* values:
  ``red & ~triangle`` is sampled as ``red & (circle | square)``, i.e. ``p(x | red, shape != triangle)``.
  Each image has exactly one value per family, so this is what NOT means for a categorical concept;
  the literal ``E_red - E_triangle`` of a DSM-trained expert is unbounded below (the sampler can raise
  ``E_triangle`` without limit) and diverges.

Everything else (weights, mixtures, other plugins' experts) is left as written.

    >>> prepare(parse_values("red & ~triangle")).formula()
    'shapes.color=red & (shapes.shape=circle | shapes.shape=square)'
"""

from __future__ import annotations

from dataclasses import dataclass

from composer import ConditionalEnergy, Energy, Negation, Product, mixture, product
from composer_shapes.experts import FAMILIES, make_value
from composer_shapes.world import ATTRIBUTES

COVERING = ("shapes.color", "shapes.shape")
"""Families whose experts together cover every pixel: a composition needs a value (or the marginal) of each."""


@dataclass(frozen=True)
class Condition:
    """One condition: ``attribute = value`` (or ``!=`` when ``negated``)."""

    attribute: str
    value: str
    negated: bool = False

    @property
    def family(self) -> str:
        return f"shapes.{self.attribute}"


def conditions(*values: str) -> list[Condition]:
    """Conditions of bare value names, ``"~name"`` for a negation: ``conditions("red", "~triangle")``."""
    out = []
    for text in values:
        negated, v = text.startswith("~"), text.lstrip("~")
        attribute = next(a for a, vs in ATTRIBUTES.items() if v in vs)
        out.append(Condition(attribute, v, negated))
    return out


def parse_values(text: str) -> Energy:
    """A product of bare values written ``"red & ~triangle"`` (no registry needed)."""
    terms = []
    for c in conditions(*(t.strip() for t in text.split("&"))):
        e = make_value(c.family, c.value)
        terms.append(Negation(e) if c.negated else e)
    return product(*terms) if len(terms) > 1 else terms[0]


def marginal(name: str, exclude: tuple[str, ...] = ()) -> Energy:
    """The mixture of the values of family ``name`` (except ``exclude``)."""
    values = [v for v in ATTRIBUTES[FAMILIES[name]] if v not in exclude]
    experts = [make_value(name, v) for v in values]
    return mixture(*experts) if len(experts) > 1 else experts[0]


def _family_of(energy: Energy) -> str | None:
    name = getattr(energy, "family", None)
    return name if isinstance(energy, ConditionalEnergy) and name in FAMILIES else None


def prepare(energy: Energy) -> Energy:
    """Complete a composition of shapes values (see the module docstring); other energies pass unchanged."""
    if isinstance(energy, Product):
        pairs = list(zip(energy.terms, energy.coefficients))
    elif _family_of(energy) is not None:
        pairs = [(energy, 1.0)]
    else:
        return energy
    positive = {_family_of(t) for t, c in pairs if c > 0} - {None}
    negated: dict[str, list[str]] = {}
    kept: list[Energy] = []
    for t, c in pairs:
        fam = _family_of(t)
        if fam is not None and c < 0 and fam not in positive:
            negated.setdefault(fam, []).append(t.value)
            continue
        kept.append(t if c == 1.0 else (Negation(t, -c) if c < 0 else c * t))
    if not any(c > 0 for _, c in pairs):
        return energy  # let validate() reject a product with no positive expert, as written
    for fam, values in negated.items():
        kept.append(marginal(fam, exclude=tuple(values)))
    for fam in COVERING:
        if fam not in positive and fam not in negated:
            kept.append(marginal(fam))
    return product(*kept) if len(kept) > 1 else kept[0]


def complete(conds: list[Condition]) -> Energy:
    """``prepare`` of the product of ``conds``."""
    terms = []
    for c in conds:
        e = make_value(c.family, c.value)
        terms.append(Negation(e) if c.negated else e)
    return prepare(product(*terms) if len(terms) > 1 else terms[0])
