"""tlkit.rundir: an output folder is recognised by tlkit's own marker, and --overwrite never deletes
anything a run did not write (issue 14, item 1), nor is a run ever scanned as a class (item 11)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tlkit import rundir
from tlkit.data import scan
from tlkit.errors import CheckpointError, ConfigError
from tlkit.rundir import MARKER, RunDir, check_location, folder_kind, next_free, prepare
from tlkit.train.pipeline import finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fake_run(folder: Path) -> Path:
    run = prepare(folder)
    for name in ("config.yaml", "splits.json", "model.json", "report.html"):
        (folder / name).write_text("x")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.pt").write_bytes(b"x")
    (folder / "eval-test").mkdir()
    (folder / "eval-test" / "metrics.json").write_text("{}")
    return run.path


def test_marker_records_what_tlkit_wrote(tmp_path: Path) -> None:
    prepare(tmp_path / "run")
    marker = json.loads((tmp_path / "run" / MARKER).read_text())
    assert marker["format"] == "tlkit-run" and marker["kind"] == "run" and marker["version"] == 1
    assert folder_kind(tmp_path / "run") == "run"
    prepare(tmp_path / "ev", kind="evaluation")
    assert folder_kind(tmp_path / "ev") == "evaluation"


def test_a_common_file_name_is_no_proof_of_a_run(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('years of work')")
    (project / "config.yaml").write_text("mine: true\n")
    with pytest.raises(ConfigError, match="not a tlkit run folder"):
        prepare(project, overwrite=True)
    assert (project / "src" / "main.py").read_text() == "print('years of work')"
    assert (project / "config.yaml").is_file()


def test_overwrite_deletes_only_what_a_run_writes(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt"):
        prepare(run, overwrite=True)
    assert (run / "notes.txt").read_text() == "mine" and (run / "checkpoints" / "last.pt").is_file()
    (run / "notes.txt").unlink()
    (run / "checkpoints" / "mine.txt").write_text("mine")  # inside a run folder too
    with pytest.raises(ConfigError, match="checkpoints/mine.txt"):
        prepare(run, overwrite=True)
    (run / "checkpoints" / "mine.txt").unlink()
    prepare(run, overwrite=True)
    assert sorted(os.listdir(run)) == [MARKER]


def test_overwrite_never_follows_a_link(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "a.txt").write_text("keep")
    run = _fake_run(tmp_path / "run")
    os.symlink(precious, run / "explain")
    with pytest.raises(ConfigError, match="a link"):
        prepare(run, overwrite=True)
    assert (precious / "a.txt").read_text() == "keep"


def test_an_output_folder_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    for out, why in ((data, "is the data folder"), (data / "runs", "lies inside the data folder"),
                     (tmp_path, "contains the data folder")):
        with pytest.raises(ConfigError, match=why):
            check_location(out, data=data)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    with pytest.raises(ConfigError, match="home folder"):
        check_location(tmp_path / "home")
    with pytest.raises(ConfigError, match="home folder"):
        check_location(tmp_path)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(ConfigError, match="current directory"):
        check_location(".")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_location(tmp_path / "file")
    assert check_location(tmp_path / "elsewhere", data=data) == (tmp_path / "elsewhere").resolve()


def test_finetune_out_data_overwrite_keeps_the_images(tmp_path: Path, make_color_dataset) -> None:  # noqa: ANN001
    data = make_color_dataset(tmp_path / "data", {"red": 4, "blue": 4})
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    with pytest.raises(ConfigError, match="data folder"):
        finetune(data, backbone="timm:test_resnet", pretrained=False, recipe="linear-probe", epochs=1, image_size=32,
                 out=str(data), overwrite=True, cache_dir=str(tmp_path / "cache"))
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


def test_a_read_only_output_folder_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            prepare(locked / "run")
    finally:
        locked.chmod(0o700)


def test_a_read_only_file_system_is_a_clear_error(tmpfs) -> None:  # noqa: ANN001
    locked = tmpfs("size=64k,ro")
    with pytest.raises(ConfigError, match="not writable"):
        prepare(locked / "run")


def test_an_output_link_to_a_run_is_overwritten_through_the_link(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "real")
    os.symlink(run, tmp_path / "link")
    prepare(tmp_path / "link", overwrite=True)
    assert (tmp_path / "link").is_symlink() and sorted(os.listdir(run)) == [MARKER]


def test_resume_needs_a_run_with_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume"):
        rundir.resumable(tmp_path / "none")
    run = _fake_run(tmp_path / "run")
    assert rundir.resumable(run).checkpoint == run / "checkpoints" / "last.pt"


def test_stale_temp_files_of_the_run_are_cleaned_but_not_a_cache_inside_it(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    stale = run / "checkpoints" / "last.pt.tmp-abc"
    stale.write_bytes(b"partial")
    live = run / "cache" / "entry" / "features.safetensors.tmp-xyz"
    live.parent.mkdir(parents=True)
    live.write_bytes(b"a live writer's")
    prepare(run, resume=True)
    assert not stale.exists() and live.exists()


def test_next_free_name(tmp_path: Path) -> None:
    base = tmp_path / "eval-test"
    assert next_free(base) == base
    _fake_run(base)
    assert next_free(base) == tmp_path / "eval-test-2"


def test_a_run_inside_the_data_folder_is_never_a_class(tmp_path: Path, make_color_dataset) -> None:  # noqa: ANN001
    data = make_color_dataset(tmp_path / "data", {"red": 4, "blue": 4})
    run = prepare(data / "old-run").path
    (run / "misclassified.png").write_bytes((data / "red" / "img_00.png").read_bytes())
    legacy = data / "legacy-run"  # a run made before markers existed
    legacy.mkdir()
    for name in ("config.yaml", "splits.json"):
        (legacy / name).write_text("x")
    (legacy / "confusion_matrix.png").write_bytes((data / "red" / "img_00.png").read_bytes())
    nested = data / "red" / "eval"
    prepare(nested, kind="evaluation")
    (nested / "per_class.png").write_bytes((data / "red" / "img_00.png").read_bytes())
    m = scan(data)
    assert m.classes == ["blue", "red"]
    assert sum(m.counts().values()) == 8


def test_report_files_are_all_known_to_the_run_dir(tmp_path: Path) -> None:
    import numpy as np

    from tlkit.evaluation.metrics import evaluate_predictions
    from tlkit.report.files import write_report

    result = evaluate_predictions([0, 1, 1], np.eye(2)[[0, 1, 0]], ["a", "b"], n_bootstrap=20)
    written = write_report(result, tmp_path / "ev")
    assert set(written) <= rundir.REPORT_FILES | rundir.OPTIONAL_REPORT_FILES
    assert RunDir(tmp_path / "ev").report.name in rundir.REPORT_FILES
