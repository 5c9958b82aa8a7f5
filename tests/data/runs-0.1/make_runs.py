"""Writes the two run directories beside this file with tlkit 0.1 as it was before the restructure
(commit 95c9c17): ``finished`` (a whole run; its checkpoint and report images removed to keep the
folder small) and ``interrupted`` (Ctrl-C after the probe's second epoch: a checkpoint to resume).

    git worktree add /tmp/legacy 95c9c17
    cd /tmp/legacy && PYTHONPATH=/tmp/legacy python <this file> /tmp/legacy-out
    # then copy /tmp/legacy-out/{finished,interrupted} here, without finished/checkpoints,
    # finished/*.png and finished/report.html

tests/test_legacy_runs.py checks that today's tlkit loads, evaluates and resumes them exactly.
"""
import shutil
import sys
from pathlib import Path

sys.path.insert(0, "/work/main/tests")
from conftest import _make_color_dataset

from tlkit.train import finetune

out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
data = _make_color_dataset(out / "colors")
recipe = {"name": "legacy", "stages": [{"kind": "probe", "epochs": 3, "lr": 0.01},
                                         {"kind": "finetune", "unfreeze": 1, "epochs": 3, "lr": 0.005}]}
opts = dict(backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0, batch_size=8,
            cache_dir=str(out / "cache"), seed=3)
finetune(data, recipe=recipe, out=str(out / "finished"), **opts)


class Stop:
    """A reporter that presses Ctrl-C after the probe's second epoch."""

    def message(self, text: str) -> None:
        pass

    def task(self, description: str, total: int) -> None:
        return None

    def epoch(self, record: dict) -> None:
        if record["stage"] == 0 and record["epoch"] == 1:
            raise KeyboardInterrupt


try:
    finetune(data, recipe=recipe, out=str(out / "interrupted"), reporter=Stop(), **opts)
except KeyboardInterrupt:
    pass
shutil.rmtree(out / "cache")
