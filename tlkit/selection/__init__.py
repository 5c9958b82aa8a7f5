"""The backbone sweep: which backbone, and how sure, from linear probes on cached features.

:func:`sweep` extracts each backbone's pooled features once (the shared feature store), scores a
stratified k-fold linear probe on train+val of the split ``tlkit finetune`` makes, and ranks the
backbones with intervals, paired differences to the best and their cost on this machine.

>>> result = sweep("data/leaves")                            # doctest: +SKIP  (every backbone with weights here)
>>> result.recommendation.command                            # doctest: +SKIP
>>> write_sweep_report(result, "sweep-leaves")               # doctest: +SKIP  (sweep.json, sweep.csv, sweep.png)

Modules, bottom up: :mod:`~tlkit.selection.result` (typed rows, ranking and the recommendation
rule), :mod:`~tlkit.selection.candidates` (which backbones), :mod:`~tlkit.selection.scoring`
(out-of-fold probes and intervals, on :mod:`tlkit.diagnosis.probes` and
:mod:`tlkit.evaluation.stats`), :mod:`~tlkit.selection.timing` (latency, throughput),
:mod:`~tlkit.selection.runner` (:func:`sweep`), :mod:`~tlkit.selection.display` (the figure) and
:mod:`~tlkit.selection.files` (writing them). The command is :mod:`tlkit.cli.sweep_commands`.

Names load lazily (PEP 562), so the CLI starts without torch.
"""

from __future__ import annotations

from tlkit._lazy import lazy_exports

#: public name -> "module:attribute"
_PUBLIC = {
    "sweep": "tlkit.selection.runner:sweep",
    "SweepResult": "tlkit.selection.result:SweepResult",
    "BackboneScore": "tlkit.selection.result:BackboneScore",
    "Recommendation": "tlkit.selection.result:Recommendation",
    "SweepDisplay": "tlkit.selection.display:SweepDisplay",
    "write_sweep_report": "tlkit.selection.files:write_sweep_report",
}

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())


__all__ = sorted(_PUBLIC)
