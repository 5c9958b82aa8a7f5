"""The data doctor: what is wrong with a dataset before any training, found on cached backbone features.

:func:`doctor` finds exact and near duplicates (leakage across splits, copies in one split, the
same picture in two classes), suspect labels (out-of-fold probes and confident learning), outliers
(images far from every class) and per-class learning curves (which classes would gain from more
images). It never writes into the data folder; features and hashes go to the feature cache.

>>> result = doctor("data/leaves")                       # doctest: +SKIP
>>> [p.paths for p in result.leaks]                      # doctest: +SKIP
>>> write_doctor_report(result, "doctor-out")            # doctest: +SKIP  (relabel.csv, doctor.json, plots)
>>> manifest, applied = apply_relabel(scan("data/leaves"), "doctor-out/relabel.csv")  # doctest: +SKIP

Modules: :mod:`~tlkit.diagnosis.features` (hashes + features of a manifest),
:mod:`~tlkit.diagnosis.duplicates`, :mod:`~tlkit.diagnosis.probes` (out-of-fold probes),
:mod:`~tlkit.diagnosis.labels`, :mod:`~tlkit.diagnosis.outliers`, :mod:`~tlkit.diagnosis.curves`,
:mod:`~tlkit.diagnosis.result` (the typed result), :mod:`~tlkit.data.relabel` (relabel.csv),
:mod:`~tlkit.diagnosis.files` (writing the report). The command is :mod:`tlkit.cli.doctor_commands`.

The names below load lazily (PEP 562), so the CLI, which imports :mod:`tlkit.cli.doctor_commands`
to register ``tlkit doctor``, starts without loading torch.
"""

from __future__ import annotations

from tlkit._lazy import lazy_exports

#: public name -> "module:attribute"
_PUBLIC = {
    "doctor": "tlkit.diagnosis.examine:doctor",
    "write_doctor_report": "tlkit.diagnosis.files:write_doctor_report",
    "apply_relabel": "tlkit.data.relabel:apply_relabel",
    "read_relabel": "tlkit.data.relabel:read_relabel",
    "RelabelApplied": "tlkit.data.relabel:RelabelApplied",
    "DoctorResult": "tlkit.diagnosis.result:DoctorResult",
    "DuplicatePair": "tlkit.diagnosis.result:DuplicatePair",
    "SuspectLabel": "tlkit.diagnosis.result:SuspectLabel",
    "Outlier": "tlkit.diagnosis.result:Outlier",
    "LearningCurve": "tlkit.diagnosis.result:LearningCurve",
}

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())


__all__ = sorted(_PUBLIC)
