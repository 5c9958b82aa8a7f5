"""The LR finder: fastai's learning-rate range test, on the cached features ``tlkit finetune`` uses, in seconds.

:func:`lr_find` trains a fresh head of the recipe's probe stage for up to 100 mini-batches, the rate
rising exponentially from 1e-7 to 10, records the (smoothed) loss until it blows up, and suggests a
rate (fastai's 'valley'); it says whether the recipe's own rate is more than 10x away and what to pass.

>>> result = lr_find("data/leaves", backbone="resnet18")   # doctest: +SKIP
>>> result.suggested, result.advice                         # doctest: +SKIP
>>> write_lr_plot(result, "lr.png")                         # doctest: +SKIP

Modules, bottom up: :mod:`~tlkit.lrfind.rules` (the sweep's rates, smoothing, stop and suggestion
rules, the advice: plain numbers), :mod:`~tlkit.lrfind.result` (:class:`LRFindResult`, the JSON
contract), :mod:`~tlkit.lrfind.range_test` (the training loop), :mod:`~tlkit.lrfind.runner`
(:func:`lr_find`: config, data, features, head), :mod:`~tlkit.lrfind.display` (the figure, the PNG).
The command is :mod:`tlkit.cli.lrfind_commands`.

Names load lazily (PEP 562), so the CLI starts without torch.
"""

from __future__ import annotations

from tlkit._lazy import lazy_exports

#: public name -> "module:attribute"
_PUBLIC = {
    "lr_find": "tlkit.lrfind.runner:lr_find",
    "LRFindResult": "tlkit.lrfind.result:LRFindResult",
    "Suggestions": "tlkit.lrfind.rules:Suggestions",
    "LRFindDisplay": "tlkit.lrfind.display:LRFindDisplay",
    "write_lr_plot": "tlkit.lrfind.display:write_lr_plot",
}

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())


__all__ = sorted(_PUBLIC)
