"""Writes the notebooks of this folder; tests/test_notebooks.py checks that the committed .ipynb files
have this script's cells (their sources: the outputs are not compared) and that they carry outputs.

    python notebooks/_make_notebooks.py [OUT_DIR]   # the notebooks, without outputs (default: this folder)
    python notebooks/_make_notebooks.py --execute   # the same, then each one executed with real settings
                                                    # (notebooks/_execute.py: efficientnet_lite0 with its
                                                    # ImageNet weights, small data; ~20 CPU minutes), outputs kept

Commit the notebooks as ``--execute`` writes them, so that readers on GitHub see a real run; the run
itself (data, run folders, feature cache) stays in a work folder outside the repository
(``--work DIR``, default /tmp/tlkit-notebooks). ``--only 03`` writes (and executes) only the notebooks whose names hold 03.
"""

import argparse
from pathlib import Path

import nbformat as nbf
from nbformat.v4 import new_notebook, new_markdown_cell as md, new_code_cell as code

from _execute import RUN_NOTE, execute

parser = argparse.ArgumentParser(description="Write (and with --execute, run) the notebooks of this folder.")
parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).resolve().parent)
parser.add_argument("--execute", action="store_true", help="execute each notebook and keep its outputs")
parser.add_argument("--work", type=Path, default=Path("/tmp/tlkit-notebooks"), help="where the executed runs write")
parser.add_argument("--only", default="", help="write (and execute) only the notebooks whose names contain this")
ARGS = parser.parse_args()
OUT = ARGS.out

SETUP = '''import os
import tlkit

# Small settings let the test suite execute this notebook in seconds; the defaults are the real thing.
BACKBONE = os.environ.get("TLKIT_NB_BACKBONE", "efficientnet_lite0")
PRETRAINED = os.environ.get("TLKIT_NB_PRETRAINED", "1") == "1"
IMAGE_SIZE = int(os.environ.get("TLKIT_NB_IMAGE_SIZE", "128"))
EPOCHS = int(os.environ["TLKIT_NB_EPOCHS"]) if "TLKIT_NB_EPOCHS" in os.environ else None
WORK = os.environ.get("TLKIT_NB_WORK", "nb-work")
PER_CLASS = int(os.environ["TLKIT_NB_PER_CLASS"]) if "TLKIT_NB_PER_CLASS" in os.environ else None
MAX_MINUTES = float(os.environ["TLKIT_NB_MAX_MINUTES"]) if "TLKIT_NB_MAX_MINUTES" in os.environ else None  # per stage
options = dict(pretrained=PRETRAINED, image_size=IMAGE_SIZE, epochs=EPOCHS, max_minutes=MAX_MINUTES, overwrite=True)'''

WRITTEN = []


def save(nb, name):
    if ARGS.only not in name:
        return  # --only: the other notebooks (and their outputs) stay as they are
    nb.cells.insert(1, md(RUN_NOTE))  # under the title: what the committed outputs were made with
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating changes nothing that did not change
        cell.id = f"{Path(name).stem}-{i:02d}"
    OUT.mkdir(parents=True, exist_ok=True)
    nbf.write(nb, OUT / name)
    WRITTEN.append(name)

nb = new_notebook(cells=[
    md("# tlkit quickstart\n\nA folder of class folders in, a fine-tuned classifier and an honest evaluation out.\n"
       "This notebook uses scikit-learn's handwritten digits written as image files, so it runs with no network."),
    code(SETUP),
    md("## 1. A dataset on disk\n\n`tlkit.export_digits` writes 1,797 PNG files as `data/<digit>/<file>.png`. "
       "Your own data has the same shape: one folder per class."),
    code('data = tlkit.export_digits(f"{WORK}/digits", per_class=PER_CLASS)\nreport = tlkit.check(data)\nprint(report.ok, report.classes)\nreport.counts["train"]'),
    md("## 2. Fine-tune\n\nThe default recipe trains a linear probe on cached features, then fine-tunes the last layer groups on cached activations."),
    code('result = tlkit.finetune(data, backbone=BACKBONE, out=f"{WORK}/run", **options)\nresult'),
    md("## 3. Evaluation\n\nAccuracy with an exact 95% interval (Clopper-Pearson), per-class figures with their own intervals, the full confusion matrix."),
    code("ev = result.evaluation\nev"),
    code("ev.plot_confusion_matrix(normalize=True);"),
    md("## 4. Use the model\n\nThe run directory holds a portable model (`model.safetensors` + `model.json`)."),
    code('model = tlkit.load(result.run_dir)\npreds = model.predict(result.manifest.paths("test")[:5])\nlist(zip(preds.labels, [round(float(c), 3) for c in preds.confidence]))'),
])
save(nb, "01-quickstart.ipynb")

nb = new_notebook(cells=[
    md("# Recipes side by side\n\nLinear probe, probe-then-finetune and gradual unfreezing on the same data and split, "
       "then a recipe of your own. The feature cache is shared: the frozen part of the backbone runs once per image."),
    code(SETUP),
    code('import time\ndata = tlkit.export_digits(f"{WORK}/digits", per_class=PER_CLASS)\nrows = []\nfor recipe in ["linear-probe", "probe-then-finetune", "gradual-unfreeze"]:\n'
         '    start = time.perf_counter()\n    r = tlkit.finetune(data, backbone=BACKBONE, recipe=recipe, out=f"{WORK}/{recipe}", **options)\n'
         '    rows.append((recipe, round(r.evaluation.accuracy, 4), r.evaluation.accuracy_ci, round(time.perf_counter() - start, 1)))\nrows'),
    md("## Your own recipe\n\nA recipe is a list of stages; the same fields work in YAML (`--recipe my.yaml`) and in Python."),
    code('mine = {"name": "mine", "description": "probe, then the last 3 groups with strong augmentation",\n'
         '        "stages": [{"kind": "probe", "epochs": 20, "lr": 0.003},\n'
         '                   {"kind": "finetune", "unfreeze": 3, "epochs": 4, "lr": 0.0005, "augment": "strong", "views": 2}]}\n'
         'r = tlkit.finetune(data, backbone=BACKBONE, recipe=mine, out=f"{WORK}/mine", **options)\nr.evaluation'),
    code('tlkit.list_recipes()'),
])
save(nb, "02-recipes.ipynb")

nb = new_notebook(cells=[
    md("# Evaluation deep dive\n\nPer-class figures, the most confused pairs, the worst mistakes and calibration, "
       "computed from any trained model on any labelled folder."),
    code(SETUP),
    code('data = tlkit.export_digits(f"{WORK}/digits", per_class=PER_CLASS)\nresult = tlkit.finetune(data, backbone=BACKBONE, recipe="linear-probe", out=f"{WORK}/eval-run", **options)\n'
         'ev = tlkit.evaluate(result.run_dir)  # the run\'s own test split\nev.accuracy, ev.accuracy_ci, ev.balanced_accuracy, ev.balanced_accuracy_ci'),
    code("ev.per_class[:5]"),
    code("ev.confused_pairs[:5]"),
    code("ev.plot_per_class();"),
    code("ev.plot_reliability();\nprint(f'expected calibration error: {ev.ece:.3f}')"),
    code("fig = ev.plot_misclassified(max_images=8, load_image=tlkit.load_image)"),
    code('from tlkit.report.files import write_report\npaths = write_report(ev, f"{WORK}/eval-report", load_image=tlkit.load_image)\nsorted(paths)'),
])
save(nb, "03-evaluation.ipynb")

nb = new_notebook(cells=[
    md("# Bring your own data\n\nFolder layouts, checking a dataset, weights with no network, and resuming a run."),
    code(SETUP),
    md("## Layouts\n\n`data/<class>/<images>`: tlkit makes a stratified train/val/test split from a seed and saves it.\n"
       "`data/{train,val,test}/<class>/<images>`: used as given (val/test may be missing and are then split off train)."),
    code('data = tlkit.export_digits(f"{WORK}/digits", per_class=PER_CLASS)\nmanifest = tlkit.scan(data, val_fraction=0.15, test_fraction=0.15, seed=0)\n'
         '{split: len(items) for split, items in manifest.splits.items()}'),
    md("## Check before training\n\nUnreadable files, empty or tiny classes, duplicates across splits, imbalance. Here we add a broken file on purpose."),
    code('import pathlib\nbad = pathlib.Path(data) / "3" / "broken.png"\nbad.write_bytes(b"not an image")\nreport = tlkit.check(data)\n'
         '[(p.severity, p.kind, p.message) for p in report.problems]'),
    code('bad.unlink()  # or train with skip_bad=True, which lists what was left out in the run directory'),
    md("## Weights with no network\n\n`efficientnet_lite0` ships its ImageNet weights in a Python package. For any other backbone, "
       "pass `weights=\"file.safetensors\"`, or copy the file into the torchvision / timm cache; `offline=True` (or `TLKIT_OFFLINE=1`) never downloads."),
    code('rows = tlkit.list_backbones("lite0")\n[(r["name"], r["weights"]) for r in rows]'),
    code('try:\n    tlkit.build_backbone("tv:resnet18", offline=True)\nexcept tlkit.WeightsError as exc:\n    print(exc)'),
    md("## Resuming\n\nEvery epoch ends with an atomic checkpoint. An interrupted run continues with `resume=True` (CLI: `--resume`) and ends exactly where an uninterrupted run would."),
    code('run = f"{WORK}/resumable"\nfirst = tlkit.finetune(data, backbone=BACKBONE, recipe="linear-probe", out=run, **options)\n'
         'again = tlkit.finetune(data, backbone=BACKBONE, recipe="linear-probe", out=run, resume=True,\n'
         '                       **{k: v for k, v in options.items() if k != "overwrite"})\nfirst.evaluation.accuracy == again.evaluation.accuracy'),
])
save(nb, "04-bring-your-own-data.ipynb")

nb = new_notebook(cells=[
    md("# Look inside a model\n\nWhat a trained model is made of, what its layers respond to, and where in an image it looks "
       "when it picks a class. Everything here works on any model that `tlkit.finetune` wrote."),
    code(SETUP),
    code('data = tlkit.export_digits(f"{WORK}/digits", per_class=PER_CLASS)\n'
         'result = tlkit.finetune(data, backbone=BACKBONE, recipe="linear-probe", out=f"{WORK}/look-run", **options)\n'
         'model = result.model  # or, later: tlkit.load(result.run_dir)\nmodel.classes'),
    md("## 1. Summary\n\nLayer groups with their output shapes, parameters (frozen or trainable) and the forward FLOPs per image. "
       "The group names are what `unfreeze`, `feature_maps` and Grad-CAM's `layer=` refer to. "
       "The same table for any backbone, with no weights: `tlkit summary --backbone NAME`."),
    code("print(model.summary())"),
    md("## 2. Feature maps\n\nThe activations of one layer group for one test image: its 16 most active channels. "
       "Early groups keep the image's layout (edges, strokes); later ones are coarser and more abstract."),
    code('from tlkit.models.inspection import feature_maps, first_conv_filters, plot_grid\n\n'
         'image_path = result.manifest.paths("test")[0]\n'
         'image = model.eval_transform()(tlkit.load_image(image_path))  # preprocessed exactly as for prediction\n'
         'group = model.backbone.group_names[len(model.backbone.group_names) // 3]  # an early group: finer maps\n'
         'maps = feature_maps(model.backbone, image, group, top=16)\n'
         'plot_grid(maps, title=f"{group}: the 16 strongest of its channels, {maps.shape[1]}x{maps.shape[2]} each");'),
    md("## 3. First-layer filters\n\nThe weights of the first convolution, each scaled to its own range and shown as RGB. "
       "Pretrained ImageNet filters look like oriented edges and colour blobs; random ones look like noise."),
    code('filters = first_conv_filters(model.backbone)\nplot_grid(filters[:32], title=f"first convolution: {len(filters)} filters of {filters.shape[1]}x{filters.shape[2]}");'),
    md("## 4. Grad-CAM: where the model looks\n\n`model.explain(image)` weights a layer group's feature map by the gradient of the "
       "class score and keeps the positive part: red is where the evidence for the class came from. "
       "The default layer is the last group whose map is at least 7x7 (`exp.layer`); pass `layer=` to choose another."),
    code('import numpy as np\n\n'
         'exp = model.explain(image_path)  # the predicted class\n'
         'print(f"predicted {exp.predicted} ({exp.probability:.2f}); true {result.manifest.classes[result.manifest.labels(\'test\')[0]]}; "\n'
         '      f"layer {exp.layer}, map {exp.map_size}, peak at (y, x) = {tuple(round(v) for v in exp.peak_in_source())} in the original")\n'
         'plot_grid(np.stack([exp.image, exp.overlay()]), title=f"Grad-CAM for {exp.class_name}", cols=2, tile=3.5);'),
    md("For a class you choose, e.g. the runner-up: where would the evidence for it be?"),
    code('preds = model.predict(image_path)\nrunner_up = preds.top_k(2)[0][1][0]\n'
         'other = model.explain(image_path, class_name=runner_up)\n'
         'plot_grid(np.stack([other.image, other.overlay()]), title=f"Grad-CAM for {runner_up} (p = {other.probability:.2f})", cols=2, tile=3.5);'),
    md("## 5. The mistakes, with their heat maps\n\nThe evaluation report of every run shows the Grad-CAM overlay beside each "
       "misclassified image; here is the same gallery in the notebook. From the command line: "
       "`tlkit explain RUN_DIR IMAGE_OR_FOLDER... [--class NAME] [--layer GROUP]` writes image|overlay PNGs."),
    code('from tlkit.models.explain import explainer\n\n'
         'fig = result.evaluation.plot_misclassified(max_images=6, load_image=tlkit.load_image, explain=explainer(model))'),
])
save(nb, "05-look-inside.ipynb")

if ARGS.execute:
    execute(OUT, WRITTEN, ARGS.work)
