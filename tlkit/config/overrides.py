"""Options over a config: keyword arguments, CLI flags and ``--set KEY=VALUE``, dotted stage keys.

A plain key lands where its name says (a RunConfig, DataConfig or ModelConfig field; a stage field
applies to every stage); ``stages.INDEX.FIELD`` reaches one stage. The result is built and validated
again, so an error names the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Any

import yaml

from tlkit.config.recipes_yaml import load_recipe
from tlkit.config.schema import DataConfig, ModelConfig, Recipe, RunConfig, StageConfig, from_dict
from tlkit.errors import ConfigError

#: keyword / CLI option -> where it lands. Stage-level keys apply to every stage.
TOP_LEVEL_KEYS = {"out", "seed", "device", "workers", "cache_dir", "compile", "resume", "overwrite", "folds", "tta",
                  "keep_checkpoint"}
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
    cfg = RunConfig(recipe=load_recipe(recipe), channels_last=True)
    if data is not None:
        cfg.data.path = str(data)
    if backbone is not None:
        cfg.model.backbone = backbone
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A new validated config: ``cfg`` with ``overrides`` (option name or ``stages.INDEX.FIELD`` -> value) set.

    ``None`` means "not given" and is skipped, except for a dotted stage key, where it clears the field.
    """
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


def parse_set_option(items: list[str]) -> dict[str, Any]:
    """``["stages.1.lr=1e-4", "head=mlp"]`` -> overrides dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out
