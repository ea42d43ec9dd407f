"""The hooks: what the package gives composer. Found through its entry point in pyproject.toml."""

import composer
from composer_template.concepts import VALUES, side
from composer_template.experts import Bowl


@composer.hookimpl
def register_experts(register):
    register("template.bowl", Bowl)


@composer.hookimpl
def register_concepts(register):
    register("template.side", VALUES, side)
