"""ONNX Runtime against tlkit's own predict, side by side on one run's test images (issue 18.3).

    uv run python bench/export_speed.py bench/_work/runs/fashion-200-linear-probe-224 --images 256

Exports the run (``TransferModel.export``, ONNX, parity-checked by the export itself), then times
both on the same preprocessed float32 batches of 32 (decoding and resizing left out: the same for
both), interleaved round by round; prints images/s, the ratio, and the largest probability difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import onnxruntime as ort

    import tlkit
    from tlkit.data import Manifest, load_image

    model = tlkit.load(args.run)
    manifest = Manifest.load(Path(args.run) / "splits.json")
    paths = manifest.paths("test")[:args.images]
    transform = model.eval_transform()
    batch = torch.stack([transform(load_image(p)) for p in paths])
    out = Path(tempfile.mkdtemp(prefix="tlkit-export-"))
    result = model.export(out, format="onnx")
    session = ort.InferenceSession(str(result.path),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    chunks = [batch[i:i + 32] for i in range(0, len(batch), 32)]
    timings: dict[str, list[float]] = {"tlkit predict_proba_tensor": [], "onnxruntime": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        ours = torch.cat([model.predict_proba_tensor(c) for c in chunks]).numpy()
        timings["tlkit predict_proba_tensor"].append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = np.concatenate([session.run(None, {name: c.numpy()})[0] for c in chunks])
        timings["onnxruntime"].append(time.perf_counter() - start)
    rates = {k: len(batch) / statistics.median(v) for k, v in timings.items()}
    print(f"{len(batch)} test images of {args.run}, batches of 32, {args.rounds} rounds, median; load average "
          f"{os.getloadavg()[0]:.2f}; torch {torch.__version__}, onnxruntime {ort.__version__}")
    for k, v in rates.items():
        print(f"| {k} | {v:.1f} images/s |")
    print(f"ratio onnxruntime / tlkit: {rates['onnxruntime'] / rates['tlkit predict_proba_tensor']:.2f}x; "
          f"largest probability difference {np.abs(ours - theirs).max():.2e}")


if __name__ == "__main__":
    main()
