"""``tlkit demo``: tlkit's main job end to end with no network.

scikit-learn's handwritten digits (1,797 images that ship inside scikit-learn) are written out as a
class-folder dataset, the packaged pretrained EfficientNet-Lite0 is fine-tuned on them with the
default recipe (its fine-tuning stage cut to a 2-minute budget), and the evaluation report is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from tlkit.console import Reporter
from tlkit.train.pipeline import FinetuneResult

DEMO_IMAGE_SIZE = 128  # digits are 8x8 pixels at source: 128 px keeps the demo fast on a CPU
DEMO_FINETUNE_MINUTES = 2.0  # the default recipe's fine-tuning budget (12 min) cut for a first look


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
                   **{"stages.1.max_minutes": DEMO_FINETUNE_MINUTES})
    options.update(overrides)
    return finetune(data, backbone="efficientnet_lite0", reporter=reporter, **options)


