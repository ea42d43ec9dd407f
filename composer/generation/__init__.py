"""Generated datasets: sharded, resumable, verifiable, distributed (``composer generate``).

    >>> import composer, tempfile
    >>> folder = tempfile.mkdtemp() + "/ds"
    >>> r = composer.generate("toy.gaussian(mean=[0,0], std=1)", folder, n=10, shard_size=4, steps=5)
    >>> [s["count"] for s in r.index["shards"]]
    [4, 4, 2]

Modules: ``plan`` (what to sample, with labels), ``shards`` (what shard ``i`` holds, its seeds, its exact
bytes), ``manifest`` (``index.json``, records, verification), ``run`` (``generate``), ``read`` (reading a
dataset back), ``command`` (``composer generate``).
"""

from composer.generation.manifest import DatasetError, verify
from composer.generation.plan import Item, Plan, PlanError, plan_from_expr, read_plan
from composer.generation.read import load_dataset
from composer.generation.run import GenerationResult, generate

__all__ = [
    "DatasetError",
    "GenerationResult",
    "Item",
    "Plan",
    "PlanError",
    "generate",
    "load_dataset",
    "plan_from_expr",
    "read_plan",
    "verify",
]
