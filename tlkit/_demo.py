"""``tlkit demo``: tlkit's main job end to end with no network.

scikit-learn's handwritten digits (1,797 images that ship inside scikit-learn) are written out as a
class-folder dataset, the packaged pretrained EfficientNet-Lite0 is fine-tuned on them with the
default recipe, and the evaluation report is written.

The demo keeps its time on a busy machine: its fine-tuning stage gets what is left of
``DEMO_MINUTES`` counted from the demo's start (after the data doctor, the features and the probe),
and a stage whose first epoch does not fit runs the steps that do (:mod:`tlkit.train.budget`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from tlkit.console import Reporter
from tlkit.train.pipeline import FinetuneResult

DEMO_IMAGE_SIZE = 128  # digits are 8x8 pixels at source: 128 px keeps the demo fast on a CPU
#: from the demo's start to the end of fine-tuning (the default recipe's stage has 12 min); the test
#: evaluation and the report follow (~20 s)
DEMO_MINUTES = 2.5
DEMO_FINETUNE_MINUTES = DEMO_MINUTES  # kept for tlkit 0.2's name


class SinceStart:
    """A budget clock whose first read (a :class:`~tlkit.train.budget.TimeBudget` takes its start from
    it) is the moment this clock was made: the stage's budget then counts the run's time before it.

    >>> ticks = iter([100.0, 131.0])
    >>> clock = SinceStart(lambda: next(ticks))  # made at 100 s
    >>> clock(), clock()  # the stage's start (say at 130 s) reads 100 s; the next read is the time then
    (100.0, 131.0)
    """

    def __init__(self, base: Callable[[], float] = time.perf_counter) -> None:
        self.base, self.origin, self.started = base, base(), False

    def __call__(self) -> float:
        if not self.started:
            self.started = True
            return self.origin
        return self.base()


def demo(out: str | os.PathLike = "demo-run", *, overwrite: bool = True, reporter: Reporter | None = None,
         **overrides) -> FinetuneResult:  # noqa: ANN003
    """Build the digits dataset under ``out/data`` and fine-tune into ``out/run``.

    >>> # result = tlkit.demo("demo-run"); result.evaluation.accuracy
    """
    from tlkit.data import export_digits
    from tlkit.train.pipeline import finetune

    out = Path(out)
    data = export_digits(out / "data", image_size=64)
    options = dict(image_size=DEMO_IMAGE_SIZE, out=str(out / "run"), overwrite=overwrite or None, offline=True,
                   **{"stages.1.max_minutes": DEMO_MINUTES})
    options.update(overrides)
    return finetune(data, backbone="efficientnet_lite0", reporter=reporter, clock=SinceStart(), **options)


