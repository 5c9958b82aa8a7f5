"""Recipe and config YAML files: the built-in recipes, loading one safely, saving a config.

A file is refused before it is parsed into objects when it is huge or uses YAML aliases
(:func:`read_yaml_text`); a recipe is then built and validated by :mod:`tlkit.config.schema`.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tlkit._io import atomic_write_text
from tlkit.config.schema import Recipe, build_dataclass
from tlkit.errors import ConfigError

#: a recipe or config file larger than this is refused (a recipe is a few hundred bytes)
MAX_YAML_BYTES = 1_000_000


def read_yaml_text(file: Path) -> str:
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
    package = Path(__file__).resolve().parent.parent  # the tlkit folder (this file is tlkit/config/...)
    for candidate in (package / "recipes", package.parent / "recipes"):
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
        recipe = build_dataclass(Recipe, name_or_path, "recipe")
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
        data = yaml.safe_load(read_yaml_text(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"recipe file {path} must hold a mapping with 'stages:'")
    data.setdefault("name", path.stem)
    recipe = build_dataclass(Recipe, data, f"recipe '{path.name}'")
    recipe.validate(f"recipe '{path.name}'")
    return recipe


def save_yaml(data: dict, path: str | os.PathLike) -> None:
    """``data`` as YAML (keys in their order) at ``path``, written atomically."""
    atomic_write_text(Path(path), yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
