"""The commands that take a model out of tlkit: ``export`` (an ONNX or TorchScript graph) and ``embed`` (features of a folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from tlkit.cli.output import friendly, out


@friendly
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or a saved model folder).")],
    fmt: Annotated[str, typer.Option("--format", help="onnx (needs tlkit[export]) or torchscript.")] = "onnx",
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder (or file name) of the graph "
                                                    "(default RUN_DIR/export).")] = None,
    images: Annotated[Optional[List[Path]], typer.Option("--images", help="Images (files or folders; repeat the "
                                                         "option) to check the graph on (default: the run's test split).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a graph already at --out.")] = False,
    with_ood: Annotated[bool, typer.Option("--with-ood", help="Add the out-of-distribution score as a second output "
                                           "(ood_score; its threshold is in the sidecar).")] = False,
) -> None:
    """Export the calibrated classifier as one graph: a preprocessed float32 NCHW batch in, class probabilities out.

    Writes the graph and a JSON sidecar (classes, preprocessing, temperature), after checking that
    it answers as [bold]tlkit predict[/] does (largest difference at most 1e-4).
    Example: [bold]tlkit export runs/leaves --format onnx[/]
    """
    from tlkit.data import list_images
    from tlkit.deploy.export import check_format
    from tlkit.models.transfer import load

    check_format(fmt)  # refused before the model loads
    model = load(run_dir)
    result = model.export(out_dir or Path(run_dir) / "export", format=fmt, overwrite=overwrite, ood=with_ood,
                          images=list_images(images) if images else None)
    out.print(f"{result.format} graph written to [bold]{result.path}[/], with {result.sidecar.name} "
              f"(classes, preprocessing, temperature {model.temperature:.3g})", highlight=False)
    out.print(f"parity with predict on {result.checked_on}: largest probability difference "
              f"{result.max_difference:.2e} (limit {result.tolerance:g})", highlight=False)
    if result.ood_difference is not None:
        out.print(f"second output ood_score ({model.ood.method}; unknown above {model.ood.threshold:.4g}): largest "
                  f"relative difference {result.ood_difference:.2e}", highlight=False)


@friendly
def embed(
    run_or_backbone: Annotated[str, typer.Argument(help="A run directory, or a backbone name (pretrained).")],
    data: Annotated[Path, typer.Argument(help="Folder of images (or of class folders: their names become labels).")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Where to write: FILE.npz (or .parquet with pyarrow).")],
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    image_size: Annotated[Optional[int], typer.Option(help="Crop size for a backbone name (default: the weights' own).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Pretrained weights file for a backbone name.")] = None,
    pretrained: Annotated[bool, typer.Option(help="Pretrained weights for a backbone name (--no-pretrained: random).")] = True,
    offline: Annotated[bool, typer.Option(help="Never download weights (also TLKIT_OFFLINE=1).")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature cache folder (default: the run's, else "
                                                      "~/.cache/tlkit/features).")] = None,
) -> None:
    """Pooled backbone features of every image, with paths, labels, backbone and preprocessing, as .npz.

    Features already in the feature cache are not computed again. Read the file with
    np.load(FILE, allow_pickle=False). Example: [bold]tlkit embed runs/leaves data/leaves --out leaves.npz[/]
    """
    from tlkit.cli.output import err
    from tlkit.console import RichReporter
    from tlkit.deploy.embed import embed as embed_fn

    result = embed_fn(run_or_backbone, data, out=out_file, batch_size=batch_size, workers=workers, device=device,
                      image_size=image_size, weights=str(weights) if weights else None, pretrained=pretrained, offline=offline or None,
                      cache_dir=cache_dir, progress=RichReporter(err).task("embed", 0))
    labels = f"{len(result.classes)} classes" if result.labels is not None else "no class folders, no labels"
    out.print(f"{len(result)} images x {result.features.shape[1]} features ({result.backbone}; {result.cached} from "
              f"the feature cache; {labels}) written to [bold]{out_file}[/]", highlight=False)
