"""composer-fashion: Fashion-MNIST for composer (IDX data, trained experts, judge, OOD protocol).

The plugin module is ``composer_fashion.plugin`` (entry point ``fashion`` in group ``composer``).
"""

from composer_fashion.data import CLASSES, load

__all__ = ["CLASSES", "load"]
