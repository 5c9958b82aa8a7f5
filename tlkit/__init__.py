"""tlkit: transfer learning for image classification on small domain datasets.

>>> import tlkit
>>> # result = tlkit.finetune("data/leaves", backbone="resnet18")
>>> # model = tlkit.load(result.run_dir); model.predict("leaf.jpg").labels
"""

__version__ = "0.1.0"

from tlkit.errors import (BackboneError, CheckpointError, ConfigError, DataError,  # noqa: E402
                          DivergedError, TlkitError, WeightsError)


def __getattr__(name: str):  # noqa: ANN202
    # Lazy: `import tlkit` stays fast (torch and timm load only when needed).
    if name in ("finetune", "run", "FinetuneResult"):
        from tlkit import train

        return getattr(train, name)
    if name in ("load", "TransferModel", "Predictions"):
        from tlkit import model

        return getattr(model, name)
    if name in ("scan", "check", "load_image", "Manifest", "export_digits"):
        from tlkit import data

        return getattr(data, name)
    if name in ("build_backbone", "list_backbones", "resolve_backbone"):
        from tlkit import backbones

        return {"build_backbone": backbones.build, "list_backbones": backbones.list_backbones,
                "resolve_backbone": backbones.resolve}[name]
    if name in ("make_config", "load_recipe", "list_recipes", "RunConfig", "Recipe", "StageConfig"):
        from tlkit import config

        return getattr(config, name)
    if name in ("compare", "Comparison"):  # importlib: `from tlkit import compare` would come back here
        import importlib

        return getattr(importlib.import_module("tlkit.compare"), name)
    if name in ("evaluate_predictions", "EvalResult"):
        from tlkit import evaluate as evaluate_mod

        return getattr(evaluate_mod, name)
    if name == "demo":
        from tlkit.demo import demo

        return demo
    if name == "evaluate":
        import importlib

        return importlib.import_module("tlkit.evaluate").evaluate
    raise AttributeError(f"module 'tlkit' has no attribute {name!r}")


__all__ = ["__version__", "TlkitError", "DataError", "WeightsError", "BackboneError", "CheckpointError",
           "ConfigError", "DivergedError", "finetune", "load", "evaluate", "compare", "scan", "check"]
