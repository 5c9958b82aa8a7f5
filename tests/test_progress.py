"""Live progress (tlkit.console): a per-batch bar with running loss and ETA, throttled; plain lines where
nothing can be redrawn; ``finetune(verbose=...)`` and an explicit ``reporter=``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from model_testing import FakeClock
from rich.console import Console

from tlkit.console import BAR_DELAY, BAR_SECONDS, RichReporter, SilentReporter, default_reporter
from tlkit.train.pipeline import finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120), out


def test_the_bar_is_throttled_and_shows_the_running_loss() -> None:
    console, out = _terminal()
    clock = FakeClock()
    reporter = RichReporter(console, clock=clock)
    bar = reporter.batches("stage 2 epoch 1", 1000)
    for step in range(1, 1001):  # 1,000 steps of 10 ms: a 10 s epoch
        clock.now += 0.01
        bar(step, 1000, 0.5)
    bar.close()
    # first shown after BAR_DELAY, then at most every BAR_SECONDS
    assert (10 - BAR_DELAY) / BAR_SECONDS - 2 <= bar.updates <= (10 - BAR_DELAY) / BAR_SECONDS + 1
    assert "stage 2 epoch 1" in out.getvalue() and "loss 0.5000" in out.getvalue()


def test_an_epoch_of_milliseconds_shows_no_bar() -> None:
    console, out = _terminal()
    clock = FakeClock()
    bar = RichReporter(console, clock=clock).batches("stage 1 epoch 1", 50)
    for step in range(1, 51):
        clock.now += 0.001
        bar(step, 50, 1.0)
    bar.close()
    assert bar.updates == 0 and out.getvalue() == ""


def test_a_file_gets_plain_lines_and_no_control_characters() -> None:
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, width=120))  # not a terminal: a CI log, 2>file
    assert reporter.batches("stage 1 epoch 1", 10) is None
    tick = reporter.task("decode train", 3)
    for done in range(1, 4):
        tick(done, 3)
    reporter.message("stage 1/1: probe, 2 epochs, cached activations")
    for epoch in range(2):
        reporter.epoch({"stage": 0, "epoch": epoch, "train_loss": 0.5, "val_accuracy": 0.9, "val_loss": 0.3,
                        "seconds": 1.0})
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].startswith("decode train") and "3/3" in lines[0]
    assert lines[2:] == [f"stage 1 epoch {e}  loss 0.5000  val acc 0.9000  val loss 0.3000  1.0s" for e in (1, 2)]


def test_jupyter_without_ipywidgets_gets_lines_not_warnings() -> None:
    pytest.importorskip("IPython")
    try:
        import ipywidgets  # noqa: F401
        pytest.skip("ipywidgets is installed: live bars work in Jupyter")
    except ImportError:
        pass
    reporter = RichReporter(Console(force_jupyter=True, file=io.StringIO()))
    assert not reporter.live and reporter.batches("e", 3) is None and reporter.task("t", 3) is None


def test_default_reporter_follows_verbose() -> None:
    assert isinstance(default_reporter(True), RichReporter) and isinstance(default_reporter(False), SilentReporter)


class CountingReporter(RichReporter):
    """A terminal reporter that keeps every training bar it made (no delay, no throttle)."""

    def __init__(self) -> None:
        super().__init__(_terminal()[0], bar_seconds=0.0, bar_delay=0.0)
        self.bars: list = []

    def batches(self, description: str, total: int):  # noqa: ANN201
        bar = super().batches(description, total)
        self.bars.append((description, total, bar))
        return bar


RECIPE = {"name": "bars", "stages": [
    {"kind": "probe", "epochs": 1, "lr": 0.01},
    {"kind": "finetune", "unfreeze": "all", "epochs": 1, "lr": 0.002},
]}


def test_training_epochs_feed_the_bar(tiny_data: Path, fast_kwargs: dict) -> None:
    reporter = CountingReporter()
    res = finetune(tiny_data, recipe=RECIPE, reporter=reporter, **{**fast_kwargs, "batch_size": 4})
    steps = [r["step"] for r in res.history]
    assert [(d, t) for d, t, _ in reporter.bars] == [("stage 1 epoch 1", steps[0]), ("stage 2 epoch 1", steps[1])]
    assert all(bar.updates == total and bar.progress is None for _, total, bar in reporter.bars)  # closed


def test_verbose_prints_progress_and_false_prints_nothing(tiny_data: Path, fast_kwargs: dict,
                                                           capsys: pytest.CaptureFixture) -> None:
    finetune(tiny_data, recipe="linear-probe", epochs=2, **fast_kwargs)
    err = capsys.readouterr().err
    assert "stage 1 epoch 2" in err and "\x1b" not in err  # pytest's capture is not a terminal
    kwargs = {**fast_kwargs, "overwrite": True}
    finetune(tiny_data, recipe="linear-probe", epochs=2, verbose=False, **kwargs)
    assert capsys.readouterr() == ("", "")
    finetune(tiny_data, recipe="linear-probe", epochs=2, reporter=SilentReporter(), **kwargs)  # it wins
    assert capsys.readouterr() == ("", "")
