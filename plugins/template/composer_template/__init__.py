"""composer-template: the smallest composer plugin, the one docs/plugins.md walks through.

``template.bowl(center=[...], scale=1)`` is an analytic expert (``composer_template.experts``);
``template.side=west|east`` is an analytic concept family in Bayes form over a flat base
(``composer_template.concepts``); ``composer_template.plugin`` registers both.
"""
