"""``python -m composer.training RECIPE.toml [--resume DIR]``: the ``composer train`` command.

Useful under torchrun, which runs a module or script per rank::

    torchrun --nproc_per_node=2 -m composer.training recipe.toml
"""

import sys

from composer.training_cli import main

if __name__ == "__main__":
    sys.exit(main())
