"""Run directories written by tlkit 0.1 before the restructure (tests/data/runs-0.1, made by the
script there) still load, predict, evaluate, and resume to the very result the old code reached."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tlkit
from tlkit.data import Manifest

LEGACY = Path(__file__).parent / "data" / "runs-0.1"
#: what make_runs.py trained with (besides the run's own config.yaml)
OPTIONS = dict(workers=0)


def _data(tmp_path: Path, make_color_dataset: Callable[..., Path]) -> Path:
    return make_color_dataset(tmp_path / "colors")  # the same images the old code trained on


def test_a_finished_run_loads_predicts_and_evaluates_as_before(tmp_path: Path,
                                                               make_color_dataset: Callable[..., Path]) -> None:
    data = _data(tmp_path, make_color_dataset)
    run = Path(shutil.copytree(LEGACY / "finished", tmp_path / "finished"))
    model = tlkit.load(run)
    assert model.classes == ["blue", "green", "red"] and model.preprocessing.input_size == 32

    # the saved predictions of the test split, recomputed by today's code from today's copy of the images
    saved = [line.split(",") for line in (run / "predictions.csv").read_text(encoding="utf-8").splitlines()[1:]]
    paths = [str(data / Path(row[1]).parent.name / Path(row[1]).name) for row in saved]
    probs = model.predict(paths).probs
    np.testing.assert_allclose(probs, np.array([[float(v) for v in row[6:9]] for row in saved]), rtol=0, atol=1e-6)

    manifest = Manifest.load(run / "splits.json", root=str(data))
    result = tlkit.evaluate(run, manifest, split="test")
    before = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert result.accuracy == before["accuracy"] and result.n == before["n"]
    assert np.asarray(result.confusion).tolist() == before["confusion"]


def test_an_interrupted_run_resumes_to_the_result_the_old_code_reached(tmp_path: Path,
                                                                       make_color_dataset: Callable[..., Path]) -> None:
    data = _data(tmp_path, make_color_dataset)
    run = Path(shutil.copytree(LEGACY / "interrupted", tmp_path / "interrupted"))
    result = tlkit.finetune(data, out=str(run), resume=True, cache_dir=str(tmp_path / "cache"), **OPTIONS)

    def epochs(folder: Path) -> list[dict]:
        lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]

    # the same epochs, steps and figures, and the same weights: bit for bit on the CPU that made them
    # (AVX-512); within float32 rounding on another one (an AMD EPYC with AVX2 rounds differently). A
    # figure near 0 (a calibrated loss of 0.001, from a temperature search) is compared to float32's
    # absolute rounding: on one EPYC it came out 2e-9 (2e-6 of itself) away from the old one.
    resumed, finished = epochs(run), epochs(LEGACY / "finished")
    assert [r.keys() for r in resumed] == [r.keys() for r in finished]
    assert resumed == [{k: pytest.approx(v, rel=1e-6, abs=1e-7) if isinstance(v, float) else v
                        for k, v in r.items()} for r in finished]
    new, old = load_file(str(run / "model.safetensors")), load_file(str(LEGACY / "finished" / "model.safetensors"))
    assert new.keys() == old.keys()
    for k in new:
        torch.testing.assert_close(new[k], old[k], rtol=0, atol=1e-6, msg=k)
    assert result.evaluation.accuracy == json.loads((LEGACY / "finished" / "metrics.json").read_text())["accuracy"]
