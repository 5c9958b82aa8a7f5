"""Numbers from predictions: metrics with intervals, paired comparisons, and displays that draw them.

Nothing here writes files (that is :mod:`tlkit.report`).
"""
