"""Resuming a run: its own ``config.yaml`` decides, and an option that would change what it computes is refused by name."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from tlkit.config.overrides import apply_overrides
from tlkit.config.recipes_yaml import load_recipe, read_yaml_text
from tlkit.config.schema import Recipe, RunConfig, from_dict
from tlkit.errors import ConfigError

#: fields that may differ between a run and the command that resumes it: where and how it runs,
#: never what it computes (a moved dataset keeps its split, read from splits.json)
RESUME_FREE = frozenset({"out", "resume", "overwrite", "device", "workers", "cache_dir", "compile", "data.path",
                         "data.skip_bad", "data.doctor", "data.allow_leakage", "model.offline", "keep_checkpoint"})


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """The :class:`RunConfig` a run saved as ``config.yaml``; ConfigError names the file when it is unusable."""
    file = Path(path)
    try:
        data = yaml.safe_load(read_yaml_text(file))
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror or exc}; the run cannot be resumed without it") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML ({exc}); the run cannot be resumed from it") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file} does not hold a run configuration")
    return from_dict(data, where=f"'{file}'")


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as ``{"recipe.stages.0.lr": value}``, plus ``"recipe.stages.#"``: each list's length."""
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
