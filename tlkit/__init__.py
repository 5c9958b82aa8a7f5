"""tlkit: transfer learning for image classification on small domain datasets.

>>> import tlkit
>>> # result = tlkit.finetune("data/leaves", backbone="resnet18")
>>> # model = tlkit.load(result.run_dir); model.predict("leaf.jpg").labels

The public names below load lazily (PEP 562): ``import tlkit`` stays fast, and torch and timm
load on first use. Each name points at the module that owns it; see the package map in README.
"""

from tlkit._lazy import lazy_exports
from tlkit._version import __version__
from tlkit.errors import BackboneError, CheckpointError, ConfigError, DataError, DivergedError, TlkitError, WeightsError

#: public name -> "module:attribute"
_PUBLIC = {
    "finetune": "tlkit.train.pipeline:finetune",
    "run": "tlkit.train.pipeline:run",
    "FinetuneResult": "tlkit.train.pipeline:FinetuneResult",
    "load": "tlkit.models.transfer:load",
    "TransferModel": "tlkit.models.transfer:TransferModel",
    "Predictions": "tlkit.models.transfer:Predictions",
    "scan": "tlkit.data:scan",
    "check": "tlkit.data:check",
    "load_image": "tlkit.data:load_image",
    "Manifest": "tlkit.data:Manifest",
    "export_digits": "tlkit.data:export_digits",
    "build_backbone": "tlkit.models.builder:build",
    "list_backbones": "tlkit.models.builder:list_backbones",
    "resolve_backbone": "tlkit.models.registry:resolve",
    "make_config": "tlkit.config:make_config",
    "load_recipe": "tlkit.config:load_recipe",
    "list_recipes": "tlkit.config:list_recipes",
    "RunConfig": "tlkit.config:RunConfig",
    "Recipe": "tlkit.config:Recipe",
    "StageConfig": "tlkit.config:StageConfig",
    "evaluate": "tlkit.report.evaluation_report:evaluate",
    "evaluate_predictions": "tlkit.evaluation.metrics:evaluate_predictions",
    "EvalResult": "tlkit.evaluation.metrics:EvalResult",
    "compare": "tlkit.evaluation.comparison:compare",
    "Comparison": "tlkit.evaluation.comparison:Comparison",
    "demo": "tlkit._demo:demo",
    "doctor": "tlkit.diagnosis:doctor",
    "DoctorResult": "tlkit.diagnosis:DoctorResult",
    "apply_relabel": "tlkit.diagnosis:apply_relabel",
    "sweep": "tlkit.selection:sweep",
    "lr_find": "tlkit.lrfind.runner:lr_find",
    "LRFindResult": "tlkit.lrfind.result:LRFindResult",
    "embed": "tlkit.deploy.embed:embed",
    "Embeddings": "tlkit.deploy.embed:Embeddings",
    "load_embeddings": "tlkit.deploy.embed:load_embeddings",
    "ExportResult": "tlkit.deploy.export:ExportResult",
    "ExportedModel": "tlkit.deploy.export:ExportedModel",
}

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())


__all__ = ["__version__", "TlkitError", "DataError", "WeightsError", "BackboneError", "CheckpointError",
           "ConfigError", "DivergedError", *_PUBLIC]
