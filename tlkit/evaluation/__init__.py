"""Numbers from predictions: metrics with intervals, paired comparisons, and displays that draw them.

``stats`` (intervals, bootstraps, calibration bins) <- ``checks`` (argument errors, small-sample
warnings) <- ``summary`` (text and HTML tables) and ``display`` (figures) <- ``metrics``
(:class:`~tlkit.evaluation.metrics.EvalResult`, ``evaluate_predictions``) <- ``scoring`` (a loaded
model scored on a dataset, behind ``tlkit.evaluate``); ``comparison`` (paired comparison of two runs) uses ``stats`` only.
Nothing here writes files or imports :mod:`tlkit.report` (which imports this package).
"""
