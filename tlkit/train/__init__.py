"""Training: the run pipeline, its stages, the feature store, checkpoints and distributed helpers.

``tlkit.train.run`` and ``tlkit.train.finetune`` are the public entry points; they load lazily so
that importing a part of this package (the feature store, checkpoints) does not import the pipeline.
"""

import importlib

_PIPELINE = ("run", "finetune", "FinetuneResult", "Reporter", "CHECKPOINT", "default_workers", "resolve_device")


def __getattr__(name: str):  # noqa: ANN202
    if name in _PIPELINE:
        return getattr(importlib.import_module("tlkit.train.pipeline"), name)
    raise AttributeError(f"module 'tlkit.train' has no attribute {name!r}")


__all__ = list(_PIPELINE)
