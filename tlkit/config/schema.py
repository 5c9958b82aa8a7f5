"""The typed config: :class:`RunConfig` = :class:`DataConfig` + :class:`ModelConfig` + :class:`Recipe`.

A :class:`Recipe` is a list of :class:`StageConfig`. Every way in (recipe YAML, ``tlkit.finetune(**overrides)``,
CLI flags) ends in :func:`build_dataclass` / :func:`from_dict` here, which coerce plain values to the
fields' types and validate once, naming the field (``recipe.stages[1].lr``) in every error.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from tlkit.errors import ConfigError

STAGE_KINDS = ("probe", "finetune")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
CLASS_WEIGHTING = ("none", "balanced", "sampler")
AUGMENTS = ("none", "light", "strong")
METRICS = ("val_accuracy", "val_balanced_accuracy", "val_loss", "val_calibrated_loss")
HEADS = ("linear", "mlp")


@dataclass
class StageConfig:
    """One training stage. ``probe`` trains the head on cached features; ``finetune`` also trains
    the last ``unfreeze`` layer groups of the backbone (``"all"`` for every group)."""

    kind: str = "probe"
    name: str = ""
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    class_weighting: str = "none"
    grad_clip: Union[float, None] = None
    unfreeze: Union[int, str] = 0
    lr_decay: float = 0.5
    augment: str = "none"
    views: int = 1
    mixup: float = 0.0
    cutmix: float = 0.0
    early_stopping: Union[int, None] = None
    max_minutes: Union[float, None] = None
    start_size: Union[float, None] = None
    freeze_stride: Union[int, None] = None
    metric: str = "val_calibrated_loss"
    train_bn: bool = False
    gpu: dict = field(default_factory=dict)

    def validate(self, where: str) -> None:
        _choice(self.kind, STAGE_KINDS, f"{where}.kind")
        _choice(self.optimizer, OPTIMIZERS, f"{where}.optimizer")
        _choice(self.schedule, SCHEDULES, f"{where}.schedule")
        _choice(self.class_weighting, CLASS_WEIGHTING, f"{where}.class_weighting")
        _choice(self.augment, AUGMENTS, f"{where}.augment")
        _choice(self.metric, METRICS, f"{where}.metric")
        _positive(self.epochs, f"{where}.epochs", allow_zero=True)
        _positive(self.lr, f"{where}.lr")
        _positive(self.batch_size, f"{where}.batch_size")
        _positive(self.views, f"{where}.views")
        _positive(self.momentum, f"{where}.momentum", allow_zero=True)
        for name in ("weight_decay", "warmup_epochs", "mixup", "cutmix"):
            _positive(getattr(self, name), f"{where}.{name}", allow_zero=True)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"{where}.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"{where}.lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.unfreeze != "all" and (not isinstance(self.unfreeze, int) or self.unfreeze < 0):
            raise ConfigError(f"{where}.unfreeze must be a whole number of layer groups or 'all', got {self.unfreeze!r}")
        if self.kind == "probe" and self.unfreeze not in (0,):
            raise ConfigError(f"{where}.unfreeze must be 0 for a probe stage (use kind: finetune to unfreeze layers)")
        if self.grad_clip is not None:
            _positive(self.grad_clip, f"{where}.grad_clip")
        if self.early_stopping is not None:
            _positive(self.early_stopping, f"{where}.early_stopping")
        if self.max_minutes is not None:
            _positive(self.max_minutes, f"{where}.max_minutes")
            if self.schedule == "onecycle":
                raise ConfigError(f"{where}.max_minutes needs schedule cosine or constant: a one-cycle schedule "
                                  "cannot be laid out again once the budget has settled the epochs")
        if self.start_size is not None:
            if not 0.25 <= self.start_size <= 1.0:
                raise ConfigError(f"{where}.start_size is the first epoch's share of the input size, in [0.25, 1]; "
                                  f"got {self.start_size}")
            if self.kind != "finetune" or self.augment == "none":
                raise ConfigError(f"{where}.start_size (progressive resizing) needs kind: finetune with augment "
                                  "light or strong: it sizes the random crops of an image stage")
        if self.freeze_stride is not None:
            if isinstance(self.freeze_stride, bool) or not isinstance(self.freeze_stride, int) or self.freeze_stride < 2:
                raise ConfigError(f"{where}.freeze_stride keeps the layer groups whose output is at most this many times "
                                  f"smaller than the input frozen (4: a CNN's stem and first stage); a whole number "
                                  f">= 2, got {self.freeze_stride!r}")
            if self.kind != "finetune":
                raise ConfigError(f"{where}.freeze_stride needs kind: finetune (a probe trains no layer group)")
        bad = set(self.gpu) - {f.name for f in dataclasses.fields(StageConfig)} - {"gpu"}
        if bad:
            raise ConfigError(f"{where}.gpu has unknown field(s) {sorted(bad)}")

    def for_device(self, device_type: str) -> "StageConfig":
        """This stage with its ``gpu:`` overrides applied when running on CUDA."""
        if device_type != "cuda" or not self.gpu:
            return self
        return build_dataclass(StageConfig, {**dataclasses.asdict(self), **self.gpu, "gpu": {}}, "stage.gpu")


@dataclass
class Recipe:
    """A named list of stages."""

    name: str = "custom"
    description: str = ""
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])

    def validate(self, where: str = "recipe") -> None:
        if not self.stages:
            raise ConfigError(f"{where}.stages is empty: a recipe needs at least one stage")
        for i, stage in enumerate(self.stages):
            stage.validate(f"{where}.stages[{i}]")


@dataclass
class DataConfig:
    """Where the images are, how they are split, which files may be left out, the crop size."""

    path: str = ""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    skip_bad: bool = False
    image_size: Union[int, None] = None
    group_by: Union[str, None] = None  # keep groups in one split: "subfolder", a CSV of path,group, or a regex
    labels: Union[str, None] = None  # a relabel.csv (from tlkit doctor, edited or not): label fixes and exclusions
    doctor: bool = True  # the data doctor on the run's split before training (doctor.json, the report's section)
    allow_leakage: bool = False  # train even when a picture (exact or near copy) or a group is in two splits

    def validate(self, where: str = "data") -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{where}.{name} must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(f"{where}.val_fraction + {where}.test_fraction must be < 1")
        if self.image_size is not None:
            _positive(self.image_size, f"{where}.image_size")
            if not 8 <= self.image_size <= 2048:
                raise ConfigError(f"{where}.image_size must be 8..2048 pixels, got {self.image_size}")
        if self.group_by is not None and not (isinstance(self.group_by, str) and self.group_by.strip()):
            raise ConfigError(f"{where}.group_by must be 'subfolder', a CSV file or a regular expression, got {self.group_by!r}")


@dataclass
class ModelConfig:
    """The backbone, where its weights come from, and the new head."""

    backbone: str = "efficientnet_lite0"
    weights: Union[str, None] = None
    pretrained: bool = True
    offline: bool = False
    head: str = "linear"
    hidden_dim: int = 512
    dropout: float = 0.0
    norm: bool = False
    # two classes: the positive class (default: tlkit.evaluation.binary's rule) and a decision threshold
    # chosen on validation for a target recall or precision (none: argmax)
    positive_class: Union[str, None] = None
    target_recall: Union[float, None] = None
    target_precision: Union[float, None] = None

    def validate(self, where: str = "model") -> None:
        _choice(self.head, HEADS, f"{where}.head")
        if self.target_recall is not None and self.target_precision is not None:
            raise ConfigError(f"{where}.target_recall and {where}.target_precision: give one of them, not both")
        for name in ("target_recall", "target_precision"):
            value = getattr(self, name)
            if value is not None:
                _positive(value, f"{where}.{name}")
                if value > 1.0:
                    raise ConfigError(f"{where}.{name} must be in (0, 1], got {value}")
        _positive(self.hidden_dim, f"{where}.hidden_dim")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class RunConfig:
    """Everything one run needs: data, model, recipe, and where and how it runs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    recipe: Recipe = field(default_factory=Recipe)
    out: Union[str, None] = None
    seed: int = 0
    device: str = "auto"
    workers: Union[int, None] = None
    cache_dir: Union[str, None] = None
    compile: bool = False
    resume: bool = False
    overwrite: bool = False
    #: image batches in channels_last memory on a CPU too (1.6-1.8x a training step, bench/RESULTS.md).
    #: New runs set it (make_config); a run made before it existed resumes without, to the same numbers.
    channels_last: bool = False
    #: keep checkpoints/last.pt when the run is done (to resume or extend it); false: delete it at the end
    keep_checkpoint: bool = True
    folds: Union[int, None] = None  # K-fold cross-validation of cached recipes (tlkit.train.crossval)
    tta: bool = False  # test-time views (flip; flip + corner crops), kept only when validation shows a gain (tlkit.train.tta)

    def validate(self) -> "RunConfig":
        self.data.validate()
        self.model.validate()
        self.recipe.validate()
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be a whole number from 0 to {2**32 - 1}, got {self.seed!r}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.folds is not None and (isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2):
            raise ConfigError(f"folds must be a whole number >= 2 (each of K models holds one fold out), got "
                              f"{self.folds!r}; leave folds out (no --folds) for a single run")
        if self.resume and self.overwrite:
            raise ConfigError("resume and overwrite cannot both be set: resume continues a run, overwrite deletes it")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# building dataclasses from plain dicts, with errors that name the field


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{where} must be one of {', '.join(allowed)}; got {value!r}")


def _positive(value: Any, where: str, *, allow_zero: bool = False) -> None:
    """A finite number > 0 (or >= 0): NaN and infinity are refused too."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
            or (value == 0 and not allow_zero)):
        raise ConfigError(f"{where} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a whole number, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be text, got {value!r}")
    if annotation is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        return build_dataclass(annotation, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def build_dataclass(cls: type, data: Any, where: str) -> Any:
    """An instance of the config dataclass ``cls`` from a mapping of its fields (an instance is returned as it is).

    Values are coerced to the fields' types (``"3"`` -> 3 for an int field, as the CLI gives them);
    an unknown field is refused with the closest valid name, a bad value with its dotted place ``where``.
    Not validated: callers run ``validate()``.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; valid fields: {', '.join(names)}"
        raise ConfigError(f"unknown field '{where}.{key}'{hint}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    if cls is StageConfig and "unfreeze" in kwargs and isinstance(kwargs["unfreeze"], str):
        kwargs["unfreeze"] = "all" if kwargs["unfreeze"] == "all" else _coerce(kwargs["unfreeze"], int, f"{where}.unfreeze")
    return cls(**kwargs)


def from_dict(data: dict, *, where: str = "config") -> RunConfig:
    """Build and validate a :class:`RunConfig` from plain data."""
    return build_dataclass(RunConfig, data, where).validate()
