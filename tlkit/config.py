"""One typed config for the CLI, recipe YAML files and Python keyword arguments.

A :class:`RunConfig` holds a :class:`DataConfig`, a :class:`ModelConfig` and a :class:`Recipe`
(a list of :class:`StageConfig`). Every way in (YAML, ``tlkit.finetune(**overrides)``, CLI flags)
goes through :func:`from_dict` / :func:`apply_overrides`, which validate once and name the field
in every error.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

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
        bad = set(self.gpu) - {f.name for f in dataclasses.fields(StageConfig)} - {"gpu"}
        if bad:
            raise ConfigError(f"{where}.gpu has unknown field(s) {sorted(bad)}")

    def for_device(self, device_type: str) -> "StageConfig":
        """This stage with its ``gpu:`` overrides applied when running on CUDA."""
        if device_type != "cuda" or not self.gpu:
            return self
        return _build(StageConfig, {**dataclasses.asdict(self), **self.gpu, "gpu": {}}, "stage.gpu")


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
    path: str = ""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    skip_bad: bool = False
    image_size: Union[int, None] = None

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


@dataclass
class ModelConfig:
    backbone: str = "efficientnet_lite0"
    weights: Union[str, None] = None
    pretrained: bool = True
    offline: bool = False
    head: str = "linear"
    hidden_dim: int = 512
    dropout: float = 0.0
    norm: bool = False

    def validate(self, where: str = "model") -> None:
        _choice(self.head, HEADS, f"{where}.head")
        _positive(self.hidden_dim, f"{where}.hidden_dim")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class RunConfig:
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
        return _build(annotation, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
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
    return _build(RunConfig, data, where).validate()


# --------------------------------------------------------------------------------------------
# recipes


#: a recipe or config file larger than this is refused (a recipe is a few hundred bytes)
MAX_YAML_BYTES = 1_000_000


def _read_yaml_text(file: Path) -> str:
    """The text of a recipe or config file, refused when it is huge or uses YAML aliases.

    Aliases (``&a`` / ``*a``) let a few hundred bytes expand into gigabytes once loaded (and saved
    again in config.yaml); no recipe needs them, so they are refused before anything is built.
    """
    if file.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{file} is {file.stat().st_size:,} bytes; a recipe is a few hundred. "
                          "Check that this is the file you meant")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file} is not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(f"{file} uses a YAML alias (*{event.anchor}); tlkit refuses aliases, which can expand "
                              "a small file enormously. Write the values out in full")
    return text


def recipes_dir() -> Path:
    """The folder of built-in recipes: inside the installed package, or ``recipes/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "recipes", here.parent / "recipes"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("the built-in recipes folder is missing from this installation; reinstall tlkit")


def list_recipes() -> dict[str, str]:
    """Built-in recipe name -> its description."""
    out = {}
    for path in sorted(recipes_dir().glob("*.yaml")):
        out[path.stem] = load_recipe(path).description
    return out


DEFAULT_RECIPE = "probe-then-finetune"


def load_recipe(name_or_path: str | os.PathLike | Recipe | dict | None = None) -> Recipe:
    """A recipe by built-in name (``linear-probe``), YAML path, dict or :class:`Recipe`."""
    if name_or_path is None:
        name_or_path = DEFAULT_RECIPE
    if isinstance(name_or_path, Recipe):
        name_or_path.validate()
        return name_or_path
    if isinstance(name_or_path, dict):
        recipe = _build(Recipe, name_or_path, "recipe")
        recipe.validate()
        return recipe
    text = str(name_or_path)
    path = Path(text)
    if not path.suffix and not path.exists():
        path = recipes_dir() / f"{text}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in recipes_dir().glob("*.yaml"))
            raise ConfigError(f"unknown recipe '{text}'; built-in recipes: {', '.join(known)}; or give a YAML file path")
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(_read_yaml_text(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"recipe file {path} must hold a mapping with 'stages:'")
    data.setdefault("name", path.stem)
    recipe = _build(Recipe, data, f"recipe '{path.name}'")
    recipe.validate(f"recipe '{path.name}'")
    return recipe


def save_yaml(data: dict, path: str | os.PathLike) -> None:
    from tlkit._io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


# --------------------------------------------------------------------------------------------
# overrides


#: keyword / CLI option -> where it lands. Stage-level keys apply to every stage.
TOP_LEVEL_KEYS = {"out", "seed", "device", "workers", "cache_dir", "compile", "resume", "overwrite"}
DATA_KEYS = {f.name for f in dataclasses.fields(DataConfig)}
MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}
STAGE_KEYS = {f.name for f in dataclasses.fields(StageConfig)} - {"kind", "name", "gpu"}


def make_config(data: str | os.PathLike | None = None, *, backbone: str | None = None,
                recipe: str | os.PathLike | Recipe | dict | None = None, **overrides: Any) -> RunConfig:
    """Build a validated :class:`RunConfig` from the same options the CLI takes.

    Keyword overrides: any field of DataConfig, ModelConfig or RunConfig by name, and any stage
    field (``epochs``, ``lr``, ``batch_size``...) which then applies to every stage. Dotted keys
    reach one stage: ``{"stages.1.lr": 1e-4}``.

    >>> make_config("data/", backbone="resnet18", epochs=5).recipe.stages[0].epochs
    5
    """
    cfg = RunConfig(recipe=load_recipe(recipe))
    if data is not None:
        cfg.data.path = str(data)
    if backbone is not None:
        cfg.model.backbone = backbone
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    raw = cfg.to_dict()
    for key, value in overrides.items():
        if value is None and not key.startswith("stages."):
            continue  # an option not given; a dotted stage key set to None (--set stages.1.x=null) clears the field
        if key in TOP_LEVEL_KEYS:
            raw[key] = value
        elif key in DATA_KEYS:
            raw["data"][key] = value
        elif key in MODEL_KEYS:
            raw["model"][key] = value
        elif key in STAGE_KEYS:
            for stage in raw["recipe"]["stages"]:
                stage[key] = value
        elif key.startswith("stages."):
            parts = key.split(".")
            if len(parts) != 3 or not parts[1].isdigit():
                raise ConfigError(f"override '{key}' must look like stages.INDEX.FIELD, e.g. stages.1.lr")
            index = int(parts[1])
            if index >= len(raw["recipe"]["stages"]):
                raise ConfigError(f"override '{key}': the recipe has only {len(raw['recipe']['stages'])} stages")
            raw["recipe"]["stages"][index][parts[2]] = value
        else:
            known = sorted(TOP_LEVEL_KEYS | DATA_KEYS | MODEL_KEYS | STAGE_KEYS)
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown option '{key}'{hint}")
    return from_dict(raw)


# --------------------------------------------------------------------------------------------
# resuming a run: its own config.yaml decides, conflicting options are refused by name

#: fields that may differ between a run and the command that resumes it: where and how it runs,
#: never what it computes (a moved dataset keeps its split, read from splits.json)
RESUME_FREE = frozenset({"out", "resume", "overwrite", "device", "workers", "cache_dir", "compile", "data.path",
                         "data.skip_bad", "model.offline"})


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """The :class:`RunConfig` a run saved as ``config.yaml``; ConfigError names the file when it is unusable."""
    file = Path(path)
    try:
        data = yaml.safe_load(_read_yaml_text(file))
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror or exc}; the run cannot be resumed without it") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML ({exc}); the run cannot be resumed from it") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file} does not hold a run configuration")
    return from_dict(data, where=f"'{file}'")


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    if isinstance(data, list):
        out = {}
        for i, value in enumerate(data):
            out.update(_flat(value, f"{prefix}{i}."))
        return out | {prefix[:-1] + "#": len(data)}
    return {prefix[:-1]: data}


def config_conflicts(saved: RunConfig, wanted: RunConfig) -> list[str]:
    """``field: wanted (run: saved)`` for every field that would change what a resumed run computes."""
    before, after = _flat(saved.to_dict()), _flat(wanted.to_dict())
    rows = []
    for key in sorted(set(before) | set(after)):
        if key in RESUME_FREE or before.get(key) == after.get(key):
            continue
        name = key.replace("recipe.stages.", "stages.").replace(".#", " (number of stages)")
        rows.append(f"{name}: {after.get(key)!r} (run: {before.get(key)!r})")
    return rows


def resume_config(run_config: str | os.PathLike, overrides: dict[str, Any]) -> RunConfig:
    """The config to resume a run with: the run's own ``config.yaml``, plus only options that do not
    change what it computes (device, workers, cache folder, a moved data folder). Any other option
    given must equal the run's value; a different one is refused by name."""
    saved = load_run_config(run_config)
    saved.overwrite = saved.resume = False  # how the run was started, not what it computes
    given = {k: v for k, v in overrides.items() if v is not None and k != "overwrite"}
    recipe = given.pop("recipe", None)
    conflicts = []
    if recipe is not None:  # a recipe is compared by name: its stages as run are in config.yaml
        name = recipe.name if isinstance(recipe, Recipe) else load_recipe(recipe).name
        if name != saved.recipe.name:
            conflicts.append(f"recipe: {name!r} (run: {saved.recipe.name!r})")
    wanted = apply_overrides(copy.deepcopy(saved), given)
    conflicts += config_conflicts(saved, wanted)
    if conflicts:
        shown = "; ".join(conflicts[:6]) + (f"; and {len(conflicts) - 6} more" if len(conflicts) > 6 else "")
        raise ConfigError(f"--resume continues the run with the options in {run_config}, but these options differ: "
                          f"{shown}. Leave them out to resume, or start a new run (another --out, or --overwrite)")
    wanted.resume = True
    return wanted


def parse_set_option(items: list[str]) -> dict[str, Any]:
    """``["stages.1.lr=1e-4", "head=mlp"]`` -> overrides dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out
