"""``python -m composer ...``: the ``composer`` command (what torchrun runs: ``torchrun -m composer generate``)."""

import sys

from composer.cli import main

if __name__ == "__main__":
    sys.exit(main())
