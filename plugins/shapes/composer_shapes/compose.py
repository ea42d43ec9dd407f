"""Compositions of shapes values written as conditions (used by the evaluation and the tests).

Every value is in Bayes form over the shared prior (``composer_shapes.experts``), so a composition needs
no completion: ``triangle`` alone is ``p(x) p(triangle | x)`` (any colour the prior allows), and the engine
counts the prior once in ``red & triangle & ~top_left``.

    >>> compose(conditions("red", "~triangle")).formula()
    'shapes.color=red & ~shapes.shape=triangle'
"""

from __future__ import annotations

from dataclasses import dataclass

from composer import Energy, Negation, product
from composer_shapes.experts import make_value
from composer_shapes.world import ATTRIBUTES


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
        attribute = next((a for a, vs in ATTRIBUTES.items() if v in vs), None)
        if attribute is None:
            raise ValueError(f"'{v}' is not a value of any shapes attribute")
        out.append(Condition(attribute, v, negated))
    return out


def compose(conds: list[Condition]) -> Energy:
    """The product of ``conds`` (a negated condition enters as ``~value``)."""
    terms = []
    for c in conds:
        e = make_value(c.family, c.value)
        terms.append(Negation(e) if c.negated else e)
    return product(*terms) if len(terms) > 1 else terms[0]
