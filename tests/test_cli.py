"""Tests for the ``tlkit`` command (typer's CliRunner): training, prediction and one-line user errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tlkit.cli import app
from tlkit.train.pipeline import CHECKPOINT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--no-pretrained", "-b", "timm:test_resnet", "--image-size", "32", "--workers", "0", "--batch-size", "8"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def cli(runner: CliRunner, args: list[str], env: dict | None = None) -> Result:
    return runner.invoke(app, [str(a) for a in args], env=env)


def assert_user_error(result: Result, *needles: str) -> str:
    """Exit code 1, one 'error:' line on stderr, no traceback; returns that line."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def trained_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    result = CliRunner().invoke(app, ["finetune", str(tiny_data), *FAST, "--recipe", "linear-probe", "--epochs", "2",
                                      "--out", str(root / "run"), "--cache-dir", str(root / "cache")])
    assert result.exit_code == 0, result.output
    (root / "stdout.txt").write_text(result.stdout)
    return root / "run"


def test_finetune_exits_0_and_prints_the_accuracy(trained_run: Path) -> None:
    stdout = (trained_run.parent / "stdout.txt").read_text()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert "accuracy" in stdout.lower()
    assert f"{metrics['accuracy']:.3f}"[:4] in stdout
    assert "validation accuracy" in stdout
    assert str(trained_run) in stdout.replace("\n", "")
    for name in ("model.safetensors", "model.json", "report.html", CHECKPOINT):
        assert (trained_run / name).is_file()


def test_predict_json_lists_labels(runner: CliRunner, trained_run: Path, tiny_data: Path) -> None:
    images = sorted(str(p) for p in (tiny_data / "red").glob("*.png"))[:3]
    result = cli(runner, ["predict", trained_run, *images, "--format", "json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["path"] for r in records] == images
    for r in records:
        assert r["label"] in ("blue", "green", "red")
        assert 0.0 <= r["confidence"] <= 1.0
        assert len(r["top_k"]) == 2 and r["top_k"][0]["class"] == r["label"]
        assert sorted(r["probs"]) == ["blue", "green", "red"] and abs(sum(r["probs"].values()) - 1) < 1e-5


def test_predict_csv_and_folders(runner: CliRunner, trained_run: Path, tiny_data: Path) -> None:
    result = cli(runner, ["predict", trained_run, tiny_data / "green", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = result.stdout.strip().splitlines()
    assert rows[0] == "path,label,confidence,unknown,ood_score,p_blue,p_green,p_red"  # the JSON's names, a column per class
    assert len(rows) == 1 + 10
    first = rows[1].split(",")
    assert abs(sum(map(float, first[5:])) - 1) < 1e-3 and max(map(float, first[5:])) == float(first[2])


def test_finetune_with_set_overrides_and_resume(runner: CliRunner, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["finetune", tiny_data, *FAST, "--recipe", "probe-then-finetune", "--epochs", "1", "--out", out,
            "--cache-dir", tmp_path / "cache", "--set", "stages.1.lr=1e-4", "--set", "head=mlp", "--max-minutes", "7"]
    result = cli(runner, args)
    assert result.exit_code == 0, result.output
    config = (out / "config.yaml").read_text()
    assert "head: mlp" in config and "lr: 0.0001" in config
    assert config.count("max_minutes: 7.0") == 2  # every stage
    assert "time budget 7 min" in result.stderr
    # all stages done: resume only saves and evaluates again
    result = cli(runner, [*args, "--resume"])
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- user errors: one line, exit 1


def test_missing_data_folder(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-data"
    result = cli(runner, ["finetune", missing, *FAST, "--out", tmp_path / "run", "--cache-dir", tmp_path / "c"])
    assert_user_error(result, str(missing))
    # a failed start leaves no half-made run behind: the same command works once the data exists
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_unknown_backbone_suggests_names(runner: CliRunner, tiny_data: Path, tmp_path: Path) -> None:
    result = cli(runner, ["finetune", tiny_data, "--no-pretrained", "-b", "timm:test_resnett", "--out",
                          tmp_path / "run", "--cache-dir", tmp_path / "c"])
    assert_user_error(result, "test_resnet")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_bad_recipe_field(runner: CliRunner, tiny_data: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - kind: probe\n    epoch: 2\n")
    result = cli(runner, ["finetune", tiny_data, *FAST, "--recipe", recipe, "--out", tmp_path / "run"])
    assert_user_error(result, "stages[0].epoch", "epochs")
    result = cli(runner, ["finetune", tiny_data, *FAST, "--set", "stages.0.augment=wild", "--out", tmp_path / "run"])
    assert_user_error(result, "stages[0].augment", "wild")
    result = cli(runner, ["finetune", tiny_data, *FAST, "--set", "epoch=2", "--out", tmp_path / "run"])
    assert_user_error(result, "epoch", "did you mean")
    result = cli(runner, ["finetune", tiny_data, *FAST, "--recipe", "no-such-recipe", "--out", tmp_path / "run"])
    assert_user_error(result, "no-such-recipe")
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_is_refused(runner: CliRunner, tiny_data: Path, trained_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    before = (copy / "model.safetensors").read_bytes()
    result = cli(runner, ["finetune", tiny_data, *FAST, "--out", copy, "--cache-dir", tmp_path / "c"])
    assert_user_error(result, str(copy), "--resume", "--overwrite")
    assert (copy / "model.safetensors").read_bytes() == before
    result = cli(runner, ["finetune", tiny_data, *FAST, "--out", tmp_path / "empty", "--resume"])
    assert_user_error(result, "nothing to resume")


def test_unreadable_checkpoint_for_predict(runner: CliRunner, trained_run: Path, tiny_data: Path,
                                           tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    image = next((tiny_data / "red").glob("*.png"))
    result = cli(runner, ["predict", copy, image, "--format", "json"])
    assert_user_error(result, str(weights))
    assert result.stdout == ""
    result = cli(runner, ["predict", tmp_path / "nothing-here", image])
    assert_user_error(result, "no saved tlkit model")
    result = cli(runner, ["predict", trained_run, image, "--format", "xml"])
    assert_user_error(result, "--format")


def test_unavailable_weights_offline(runner: CliRunner, tiny_data: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-home"
    empty.mkdir()
    for var in ("TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME", "HUGGINGFACE_HUB_CACHE", "HF_HUB_CACHE"):
        monkeypatch.setenv(var, str(empty))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli(runner, ["finetune", tiny_data, "-b", "tv:resnet18", "--offline", "--image-size", "32",
                          "--workers", "0", "--out", tmp_path / "run", "--cache-dir", tmp_path / "c"])
    line = assert_user_error(result)
    assert "offline" in line.lower() or "weights" in line.lower()
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_evaluate_on_a_folder_missing_a_class_and_holding_an_unknown_one(
        runner: CliRunner, trained_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    import tlkit

    other = tmp_path / "other"
    shutil.copytree(tiny_data / "red", other / "red")
    shutil.copytree(tiny_data / "green", other / "green")  # "blue" is absent
    shutil.copytree(tiny_data / "blue", other / "purple")  # a class the model never saw
    ev = tlkit.evaluate(trained_run, other, split="all")
    assert ev.classes == ["blue", "green", "red"] and ev.confusion.shape == (3, 3)
    assert ev.confusion[0].sum() == 0 and ev.confusion.sum() == 20  # every known image counted once
    assert sorted(ev.unknown) == ["purple"] and len(ev.unknown["purple"]) == 10
    result = cli(runner, ["evaluate", trained_run, other, "--split", "all", "--out", tmp_path / "ev"])
    assert result.exit_code == 0, result.output
    assert "purple" in result.stdout and "10 files not scored" in result.stdout
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert len(metrics["confusion"]) == 3 and metrics["unknown"]["purple"]
    page = (tmp_path / "ev" / "report.html").read_text(encoding="utf-8")
    assert metrics["n_misclassified"] > 0 and "Grad-CAM heat map for the predicted class" in page  # model passed on


def test_explain_writes_overlays_for_a_chosen_layer_and_class(runner: CliRunner, trained_run: Path, tiny_data: Path,
                                                               tmp_path: Path) -> None:
    from PIL import Image

    images = [tiny_data / "red" / "img_00.png", tiny_data / "blue"]
    result = cli(runner, ["explain", trained_run, *images, "--class", "green", "--layer", "layer3", "--out", tmp_path / "cams"])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "cams").glob("*.gradcam.png"))
    assert len(files) == 11 and all(f.name.endswith("-green.gradcam.png") for f in files)
    assert Image.open(files[0]).size[0] > 64  # a captioned figure: image | overlay | colour bar
    assert "heat map for 'green'" in result.output and "layer layer3" in result.output
    assert_user_error(cli(runner, ["explain", trained_run, images[0], "--layer", "layer9", "--out", tmp_path / "x"]),
                      "layer9", "layer4")
    assert_user_error(cli(runner, ["explain", trained_run, images[0], "--class", "purple", "--out", tmp_path / "x"]),
                      "purple", "blue, green, red")


def test_every_command_has_help_with_an_example(runner: CliRunner) -> None:
    for command in ("finetune", "evaluate", "predict", "check", "backbones", "recipes", "summary", "explain", "demo"):
        result = cli(runner, [command, "--help"])
        assert result.exit_code == 0, command
        assert "Example" in result.stdout or command == "recipes", command


# --------------------------------------------------------------------------- issue 14: one error line, never a traceback


@pytest.mark.parametrize("extra, needle", [
    (["--seed", str(2**64)], "seed"), (["--max-minutes", "nan"], "max_minutes"), (["--max-minutes", "inf"], "max_minutes"),
    (["--lr", "nan"], "lr"), (["--set", "warmup_epochs=.nan"], "warmup_epochs"), (["--device", "mps"], "mps"),
])
def test_bad_numbers_and_devices_are_one_line(runner: CliRunner, tiny_data: Path, tmp_path: Path, extra: list,
                                              needle: str) -> None:
    if "mps" in extra:
        import torch

        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            pytest.skip("this machine has MPS")
    result = cli(runner, ["finetune", tiny_data, *FAST, "--out", tmp_path / "run", "--cache-dir", tmp_path / "c", *extra])
    assert_user_error(result, needle)
    assert not (tmp_path / "run").exists()


def test_out_pointing_at_a_file_or_a_symlink(runner: CliRunner, tiny_data: Path, trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    result = cli(runner, ["finetune", tiny_data, *FAST, "--out", tmp_path / "file", "--overwrite"])
    assert_user_error(result, "is a file")
    assert (tmp_path / "file").read_text() == "not a folder"
    shutil.copytree(trained_run, tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    result = cli(runner, ["finetune", tiny_data, *FAST, "--recipe", "linear-probe", "--epochs", "1", "--out",
                          tmp_path / "link", "--overwrite", "--cache-dir", tmp_path / "c"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "model.safetensors").is_file()


def test_summary_and_predict_option_values_are_checked(runner: CliRunner, trained_run: Path, tiny_data: Path) -> None:
    assert_user_error(cli(runner, ["summary", "-b", "timm:test_resnet", "--trainable-groups", "abc"]),
                      "--trainable-groups", "abc")
    assert_user_error(cli(runner, ["predict", trained_run, tiny_data / "red", "--top-k", "-1"]), "--top-k")


def test_evaluate_never_overwrites_a_report_silently(runner: CliRunner, trained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    first = cli(runner, ["evaluate", run])
    assert first.exit_code == 0, first.output
    second = cli(runner, ["evaluate", run])  # the default folder is taken: the next free name
    assert second.exit_code == 0, second.output
    assert (run / "eval-test" / "report.html").is_file() and (run / "eval-test-2" / "report.html").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "report.html").write_text("my own report")
    assert_user_error(cli(runner, ["evaluate", run, "--out", tmp_path / "mine"]), "--overwrite")
    assert_user_error(cli(runner, ["evaluate", run, "--out", tmp_path / "mine", "--overwrite"]), "not a tlkit evaluation")
    assert (tmp_path / "mine" / "report.html").read_text() == "my own report"
    replaced = cli(runner, ["evaluate", run, "--out", run / "eval-test", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output


def test_tables_are_never_cut_in_a_pipe(runner: CliRunner, trained_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    result = cli(runner, ["backbones", "lite0"])  # CliRunner's stdout is no terminal, like `| grep`
    assert result.exit_code == 0 and "timm:tf_efficientnet_lite0" in result.stdout, result.stdout
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "with-a-long-image-name-that-goes-on.png"
    deep.parent.mkdir(parents=True)
    shutil.copy(tiny_data / "red" / "img_00.png", deep)
    result = cli(runner, ["predict", trained_run, deep])
    assert str(deep) in result.stdout, result.stdout


def test_resume_reads_the_runs_own_options(runner: CliRunner, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["finetune", tiny_data, *FAST, "--recipe", "linear-probe", "--epochs", "2", "--out", out,
            "--cache-dir", tmp_path / "cache", "--image-size", "40"]
    assert cli(runner, args).exit_code == 0
    # the short command resumes with the run's options (image size 40, not the backbone's default)
    result = cli(runner, ["finetune", tiny_data, "--out", out, "--resume", "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 0, result.output
    assert "40px" in result.stderr
    result = cli(runner, ["finetune", tiny_data, "--out", out, "--resume", "--image-size", "64", "--recipe",
                          "few-shot"])
    assert_user_error(result, "image_size: 64 (run: 40)", "recipe: 'few-shot' (run: 'linear-probe')")


def test_predict_and_evaluate_skip_bad_files_when_asked(runner: CliRunner, trained_run: Path, tiny_data: Path,
                                                         tmp_path: Path) -> None:
    folder = tmp_path / "imgs" / "red"
    shutil.copytree(tiny_data / "red", folder)
    (folder / "broken.png").write_bytes(b"not an image")
    line = assert_user_error(cli(runner, ["predict", trained_run, folder]), "broken.png", "--skip-bad")
    assert "skip-bad" in line
    result = cli(runner, ["predict", trained_run, folder, "--skip-bad", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 10 and "broken.png" in result.stderr
    assert_user_error(cli(runner, ["evaluate", trained_run, tmp_path / "imgs", "--out", tmp_path / "ev"]), "broken.png")
    result = cli(runner, ["evaluate", trained_run, tmp_path / "imgs", "--skip-bad", "--out", tmp_path / "ev"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 10 and any("broken.png" in w for w in metrics["warnings"])


def test_every_option_a_message_names_exists() -> None:
    """Hints and errors name CLI options (``use --batch-size 8``): each must be an option of a tlkit command."""
    import re

    import typer.main

    import tlkit

    command = typer.main.get_command(app)
    known = {opt for sub in [command, *command.commands.values()] for param in sub.params
             for opt in [*param.opts, *getattr(param, "secondary_opts", [])]}
    torchrun = {"--standalone", "--nnodes"}  # torchrun's own options, in the multi-GPU hints
    named: dict[str, set[str]] = {}
    for source in sorted(Path(tlkit.__file__).parent.rglob("*.py")):
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*(?![\w-])", source.read_text()):
            named.setdefault(option, set()).add(source.name)
    unknown = {option: sorted(files) for option, files in named.items() if option not in known | torchrun}
    assert not unknown, f"messages name options no command has: {unknown}"
    assert {"--batch-size", "--resume", "--overwrite", "--skip-bad"} <= set(named)
