"""Tests for tlkit.config: recipes, validation messages that name the field, overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tlkit.config import RunConfig, StageConfig, apply_overrides, from_dict, list_recipes, load_recipe, make_config, parse_set_option, recipes_dir
from tlkit.errors import ConfigError

BUILT_IN = ("linear-probe", "probe-then-finetune", "gradual-unfreeze", "full-finetune", "few-shot")


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- built-in recipes


def test_every_built_in_recipe_is_listed_loads_and_validates() -> None:
    listed = list_recipes()
    assert set(BUILT_IN) <= set(listed)
    assert {p.stem for p in recipes_dir().glob("*.yaml")} == set(listed)
    for name in BUILT_IN:
        recipe = load_recipe(name)
        assert recipe.name == name
        assert recipe.stages, name
        assert listed[name] == recipe.description and recipe.description
        recipe.validate()
        for stage in recipe.stages:
            assert isinstance(stage, StageConfig)
            stage.for_device("cuda").validate("gpu")
        # the whole config validates too, as finetune() would build it
        assert make_config("somewhere", recipe=name).recipe.name == name


def test_default_recipe_is_probe_then_finetune() -> None:
    cfg = make_config("data")
    assert cfg.recipe.name == "probe-then-finetune"
    assert [s.kind for s in cfg.recipe.stages] == ["probe", "finetune"]


def test_unknown_recipe_name_lists_the_built_in_ones() -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'nope'") as info:
        load_recipe("nope")
    for name in BUILT_IN:
        assert name in str(info.value)


# --------------------------------------------------------------------------- YAML errors name the field


def test_unknown_stage_field_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "r.yaml", "stages:\n  - kind: probe\n    epoch: 3\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert "stages[0].epoch" in msg
    assert "did you mean 'epochs'" in msg


def test_unknown_top_level_recipe_field_is_named(tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "r.yaml", "descripton: x\nstages:\n  - kind: probe\n")
    with pytest.raises(ConfigError, match=r"descripton.*did you mean 'description'"):
        load_recipe(path)


@pytest.mark.parametrize("field, value", [("epochs", "-1"), ("augment", "wild"), ("lr", "0"), ("kind", "train"),
                                          ("batch_size", "many"), ("unfreeze", "-2"), ("label_smoothing", "1.5"),
                                          ("views", "0"), ("max_minutes", "-3")])
def test_bad_stage_value_names_stages_index_field(tmp_path: Path, field: str, value: str) -> None:
    extra = "    unfreeze: 1\n" if field not in ("unfreeze", "kind") else ""
    text = f"stages:\n  - kind: probe\n    epochs: 1\n  - kind: finetune\n{extra}    {field}: {value}\n"
    path = write_recipe(tmp_path / "r.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert f"stages[1].{field}" in str(info.value)
    assert value.strip("-") in str(info.value) or field == "kind"


def test_bad_value_in_a_dict_recipe_is_named() -> None:
    with pytest.raises(ConfigError, match=r"stages\[0\]\.epochs"):
        load_recipe({"stages": [{"kind": "probe", "epochs": -1}]})


def test_probe_stage_cannot_unfreeze() -> None:
    with pytest.raises(ConfigError, match=r"stages\[0\]\.unfreeze"):
        load_recipe({"stages": [{"kind": "probe", "unfreeze": 2}]})


def test_empty_and_malformed_recipes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty"):
        load_recipe({"stages": []})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(write_recipe(tmp_path / "bad.yaml", "stages: [\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_recipe(write_recipe(tmp_path / "list.yaml", "- kind: probe\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_unknown_gpu_override_field_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"stages\[0\]\.gpu.*lrr"):
        load_recipe({"stages": [{"kind": "probe", "gpu": {"lrr": 1}}]})


# --------------------------------------------------------------------------- overrides


def test_stage_override_applies_to_every_stage() -> None:
    cfg = make_config("data", recipe="gradual-unfreeze", epochs=2, batch_size=5)
    assert len(cfg.recipe.stages) == 4
    assert all(s.epochs == 2 and s.batch_size == 5 for s in cfg.recipe.stages)


def test_dotted_override_reaches_one_stage_only() -> None:
    base = load_recipe("probe-then-finetune")
    cfg = make_config("data", recipe="probe-then-finetune", **{"stages.1.lr": 1e-4})
    assert cfg.recipe.stages[1].lr == 1e-4
    assert cfg.recipe.stages[0].lr == base.stages[0].lr != 1e-4


def test_dotted_override_errors() -> None:
    with pytest.raises(ConfigError, match="only 2 stages"):
        make_config("data", recipe="probe-then-finetune", **{"stages.5.lr": 1e-4})
    with pytest.raises(ConfigError, match="stages.INDEX.FIELD"):
        make_config("data", **{"stages.x.lr": 1e-4})
    with pytest.raises(ConfigError, match=r"stages\[1\]\.lrr.*did you mean 'lr'"):
        make_config("data", recipe="probe-then-finetune", **{"stages.1.lrr": 1e-4})


def test_overrides_reach_data_model_and_top_level() -> None:
    cfg = make_config("data", backbone="timm:test_resnet", image_size=48, head="mlp", dropout=0.3, seed=7,
                      workers=0, cache_dir="/tmp/x", val_fraction=0.2)
    assert cfg.model.backbone == "timm:test_resnet"
    assert (cfg.data.image_size, cfg.data.val_fraction, cfg.data.path) == (48, 0.2, "data")
    assert (cfg.model.head, cfg.model.dropout) == ("mlp", 0.3)
    assert (cfg.seed, cfg.workers, cfg.cache_dir) == (7, 0, "/tmp/x")


def test_none_overrides_are_ignored() -> None:
    cfg = make_config("data", recipe="linear-probe", epochs=None, lr=None)
    assert cfg.recipe.stages[0].epochs == load_recipe("linear-probe").stages[0].epochs


def test_unknown_override_key_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'epoch'.*did you mean 'epochs'"):
        make_config("data", epoch=3)
    with pytest.raises(ConfigError, match="unknown option 'zzzzzz'"):
        make_config("data", zzzzzz=3)


def test_bad_override_value_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"stages\[0\]\.epochs"):
        make_config("data", recipe="linear-probe", epochs=-1)
    with pytest.raises(ConfigError, match=r"model\.head"):
        make_config("data", head="transformer")
    with pytest.raises(ConfigError, match=r"model\.dropout"):
        make_config("data", dropout=1.5)
    with pytest.raises(ConfigError, match="resume and overwrite"):
        make_config("data", resume=True, overwrite=True)
    with pytest.raises(ConfigError, match="workers"):
        make_config("data", workers=-1)


def test_set_option_parsing_and_application() -> None:
    parsed = parse_set_option(["stages.1.lr=1e-4", "head=mlp", "epochs=3", "augment = strong", "norm=true",
                               "grad_clip=null"])
    # YAML 1.1 reads "1e-4" as text; the config's own coercion turns it into a number
    assert float(parsed.pop("stages.1.lr")) == 1e-4
    assert parsed == {"head": "mlp", "epochs": 3, "augment": "strong", "norm": True, "grad_clip": None}
    parsed["stages.1.lr"] = "1e-4"
    cfg = make_config("data", recipe="probe-then-finetune", **parsed)
    assert cfg.recipe.stages[1].lr == 1e-4 and isinstance(cfg.recipe.stages[1].lr, float)
    assert cfg.recipe.stages[0].lr != 1e-4
    assert cfg.model.head == "mlp" and cfg.model.norm is True
    assert all(s.epochs == 3 and s.augment == "strong" for s in cfg.recipe.stages)
    for bad in (["lr"], ["=3"]):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_set_option(bad)


def test_string_values_are_coerced_like_the_cli_gives_them() -> None:
    cfg = apply_overrides(RunConfig(recipe=load_recipe("linear-probe")), {"epochs": "4", "lr": "0.01", "pretrained": "no"})
    assert cfg.recipe.stages[0].epochs == 4 and cfg.recipe.stages[0].lr == 0.01
    assert cfg.model.pretrained is False
    cfg = make_config("data", recipe={"stages": [{"kind": "finetune", "unfreeze": "all"}, {"kind": "finetune", "unfreeze": "2"}]})
    assert [s.unfreeze for s in cfg.recipe.stages] == ["all", 2]


def test_config_round_trips_through_a_dict() -> None:
    cfg = make_config("data", recipe="gradual-unfreeze", epochs=2, seed=3, head="mlp")
    again = from_dict(cfg.to_dict())
    assert again == cfg


# --------------------------------------------------------------------------- gpu block


def test_for_device_cuda_applies_the_gpu_block() -> None:
    stage = load_recipe({"stages": [{"kind": "finetune", "unfreeze": 2, "lr": 0.001,
                                     "gpu": {"unfreeze": "all", "lr": 0.0005, "epochs": 12}}]}).stages[0]
    on_gpu = stage.for_device("cuda")
    for key, value in stage.gpu.items():
        assert getattr(on_gpu, key) == value
    assert on_gpu.unfreeze == "all" and on_gpu.gpu == {}
    assert stage.for_device("cpu") is stage
    assert stage.unfreeze == 2  # the recipe's own stage is left alone
    plain = StageConfig(kind="probe")
    assert plain.for_device("cuda") is plain


def test_for_device_validates_gpu_values() -> None:
    stage = StageConfig(kind="finetune", unfreeze=1, gpu={"epochs": "x"})
    with pytest.raises(ConfigError, match="epochs"):
        stage.for_device("cuda")


def test_a_dotted_stage_override_can_clear_a_field() -> None:
    from tlkit.config import parse_set_option

    cfg = make_config("somewhere", **parse_set_option(["stages.1.max_minutes=null"]), epochs=None)
    assert cfg.recipe.stages[1].max_minutes is None
    assert cfg.recipe.stages[1].epochs == load_recipe("probe-then-finetune").stages[1].epochs


# --------------------------------------------------------------------------- issue 14: bad numbers, YAML bombs, resume


@pytest.mark.parametrize("override, field", [
    ({"max_minutes": float("nan")}, "max_minutes"), ({"max_minutes": float("inf")}, "max_minutes"),
    ({"lr": float("nan")}, "lr"), ({"warmup_epochs": float("nan")}, "warmup_epochs"),
    ({"momentum": float("nan")}, "momentum"), ({"seed": 2**64}, "seed"), ({"seed": -1}, "seed"),
    ({"image_size": 30000}, "image_size"),
])
def test_non_finite_and_out_of_range_numbers_are_refused_by_name(override: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make_config("data", **override)


def test_set_option_nan_is_refused() -> None:
    with pytest.raises(ConfigError, match="warmup_epochs"):
        make_config("data", **parse_set_option(["warmup_epochs=.nan"]))


def test_a_recipe_with_yaml_aliases_is_refused(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
           "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n" \
           "stages: [{kind: probe}]\n"
    path = write_recipe(tmp_path / "bomb.yaml", bomb)
    with pytest.raises(ConfigError, match="alias"):
        load_recipe(path)
    huge = write_recipe(tmp_path / "huge.yaml", "# " + "x" * 2_000_000 + "\nstages: [{kind: probe}]\n")
    with pytest.raises(ConfigError, match="bytes"):
        load_recipe(huge)


def _saved(tmp_path: Path, **overrides: Any) -> Path:
    from tlkit.config import save_yaml

    cfg = make_config("data", backbone="timm:test_resnet", recipe="linear-probe", image_size=64, **overrides)
    save_yaml(cfg.to_dict(), tmp_path / "config.yaml")
    return tmp_path / "config.yaml"


def test_resume_takes_the_runs_own_config(tmp_path: Path) -> None:
    from tlkit.config import resume_config

    cfg = resume_config(_saved(tmp_path, epochs=3), {"workers": 2, "device": "cpu", "path": "moved/data"})
    assert cfg.resume and cfg.data.image_size == 64 and cfg.recipe.name == "linear-probe"
    assert cfg.recipe.stages[0].epochs == 3 and cfg.model.backbone == "timm:test_resnet"
    assert (cfg.workers, cfg.device, cfg.data.path) == (2, "cpu", "moved/data")
    # options equal to the run's are fine, and the run's own overwrite flag is not a conflict
    same = resume_config(_saved(tmp_path, overwrite=True), {"image_size": 64, "recipe": "linear-probe"})
    assert same.data.image_size == 64 and not same.overwrite


def test_resume_refuses_conflicting_options_by_name(tmp_path: Path) -> None:
    from tlkit.config import resume_config

    path = _saved(tmp_path)
    with pytest.raises(ConfigError) as info:
        resume_config(path, {"image_size": 224, "recipe": "probe-then-finetune", "lr": 0.1})
    message = str(info.value)
    for needle in ("image_size: 224 (run: 64)", "recipe: 'probe-then-finetune' (run: 'linear-probe')",
                   "stages.0.lr: 0.1"):
        assert needle in message, message
