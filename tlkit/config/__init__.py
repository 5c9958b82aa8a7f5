"""One typed config for the CLI, recipe YAML files and Python keyword arguments.

A :class:`RunConfig` holds a :class:`DataConfig`, a :class:`ModelConfig` and a :class:`Recipe`
(a list of :class:`StageConfig`). Every way in (YAML, ``tlkit.finetune(**overrides)``, CLI flags)
goes through :func:`from_dict` / :func:`apply_overrides`, which validate once and name the field
in every error.

The parts, each importing only those before it:

* :mod:`tlkit.config.schema`: the dataclasses, their validation, building them from plain data;
* :mod:`tlkit.config.recipes_yaml`: built-in recipes, safe YAML reading (no aliases), saving;
* :mod:`tlkit.config.overrides`: keyword / ``--set`` options and dotted stage keys;
* :mod:`tlkit.config.resume`: what a resumed run may change, read from its own ``config.yaml``.

Every name is importable from ``tlkit.config`` as before.
"""

from __future__ import annotations

from tlkit.config.overrides import DATA_KEYS, MODEL_KEYS, STAGE_KEYS, TOP_LEVEL_KEYS, apply_overrides, make_config, parse_set_option
from tlkit.config.recipes_yaml import DEFAULT_RECIPE, MAX_YAML_BYTES, list_recipes, load_recipe, read_yaml_text, recipes_dir, save_yaml
from tlkit.config.resume import RESUME_FREE, config_conflicts, load_run_config, resume_config
from tlkit.config.schema import (
    AUGMENTS,
    CLASS_WEIGHTING,
    HEADS,
    METRICS,
    OPTIMIZERS,
    SCHEDULES,
    STAGE_KINDS,
    DataConfig,
    ModelConfig,
    Recipe,
    RunConfig,
    StageConfig,
    build_dataclass,
    from_dict,
)

__all__ = [
    "AUGMENTS", "CLASS_WEIGHTING", "DATA_KEYS", "DEFAULT_RECIPE", "HEADS", "MAX_YAML_BYTES", "METRICS", "MODEL_KEYS",
    "OPTIMIZERS", "RESUME_FREE", "SCHEDULES", "STAGE_KEYS", "STAGE_KINDS", "TOP_LEVEL_KEYS",
    "DataConfig", "ModelConfig", "Recipe", "RunConfig", "StageConfig",
    "apply_overrides", "build_dataclass", "config_conflicts", "from_dict", "list_recipes", "load_recipe", "load_run_config",
    "make_config", "parse_set_option", "read_yaml_text", "recipes_dir", "resume_config", "save_yaml",
]
