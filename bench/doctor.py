"""The data doctor on real data: how its near-duplicate thresholds were chosen, and what it finds.

    uv run python bench/doctor.py calibrate                      # thresholds, on images of no benchmark folder
    uv run python bench/doctor.py measure fashion --train-per-class 100
    uv run python bench/doctor.py measure digits

``calibrate`` makes 7 near-copies (resized to 95% + JPEG 90, halved, JPEG 50, cropped 5% off two
sides, cropped 5% off every side, brightened and darkened 15%) of two kinds of pictures that no
``measure`` run uses: 200 Fashion-MNIST *training* images from index 40,000 on (``measure`` uses the
first ~120 per class and the test set) and 78 tiles of 96 px cut from the photos that ship with
scikit-learn and matplotlib. It prints, per kind of copy, the cosine similarity and Hamming
distance of copy and original, the closest pairs of *different* pictures, and how many copies and
how many false pairs each candidate rule accepts. Features are centred per source, as the doctor
centres them per dataset.

``measure`` copies a dataset, plants 20 near-duplicates of training images in its test split
(resized to 95%, JPEG quality 90) and flips 5% of its training labels (seeded), runs
``tlkit.doctor`` twice (empty feature cache, then warm), scores what it found and appends a
section to ``bench/REALDATA.md``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realdata import FASHION_CLASSES, FASHION_DIR, export_fashion  # noqa: E402

WORK = Path("bench/_work")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


# ------------------------------------------------------------------------------------ near-copies

def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).copy()


def resized(image: Image.Image, factor: float) -> Image.Image:
    w, h = image.size
    return image.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.LANCZOS)


def cropped(image: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = image.size
    return image.crop((round(w * left), round(h * top), w - round(w * right), h - round(h * bottom)))


#: name -> (how the copy is made, file extension)
VARIANTS = {
    "resize95+jpeg90": (lambda im: jpeg(resized(im, 0.95), 90), ".jpg"),
    "resize50": (lambda im: resized(im, 0.5), ".png"),
    "jpeg50": (lambda im: jpeg(im, 50), ".jpg"),
    "crop5-corner": (lambda im: cropped(im, 0.0, 0.0, 0.05, 0.05), ".png"),
    "crop5-sides": (lambda im: cropped(im, 0.05, 0.05, 0.05, 0.05), ".png"),
    "bright+15": (lambda im: ImageEnhance.Brightness(im).enhance(1.15), ".png"),
    "dark-15": (lambda im: ImageEnhance.Brightness(im).enhance(0.85), ".png"),
}


def photo_tiles(size: int = 96) -> list[Image.Image]:
    import matplotlib
    import sklearn.datasets

    files = [Path(sklearn.datasets.__file__).parent / "images" / n for n in ("china.jpg", "flower.jpg")]
    files.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    tiles = []
    for file in files:
        with Image.open(file) as photo:
            photo = photo.convert("RGB")
            for top in range(0, photo.height - size + 1, size):
                for left in range(0, photo.width - size + 1, size):
                    tiles.append(photo.crop((left, top, left + size, top + size)))
    return tiles


def calibration_set(out: Path, n_fashion: int = 200, n_plain: int = 1800) -> Path:
    """out/<source>/<picture>__<variant>.<ext>: originals and their near-copies (class = source), plus
    ``n_plain`` more Fashion-MNIST originals without copies (more pairs of different pictures)."""
    marker = out / ".done"
    if marker.is_file():
        return out
    xs = _read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")
    sources = {"fashion": [Image.fromarray(xs[40000 + i]) for i in range(n_fashion)], "photos": photo_tiles()}
    for source, pictures in sources.items():
        folder = out / source
        folder.mkdir(parents=True, exist_ok=True)
        for i, picture in enumerate(pictures):
            picture.save(folder / f"p{i:04d}__original.png")
            for name, (make, ext) in VARIANTS.items():
                make(picture).save(folder / f"p{i:04d}__{name}{ext}", **({"quality": 95} if ext == ".jpg" else {}))
    for i in range(n_plain):
        Image.fromarray(xs[42000 + i]).save(out / "fashion" / f"q{i:04d}__original.png")
    marker.write_text("ok")
    return out


def pair_signals(table: object, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cosine (centred on these rows), Hamming and thumbnail correlation between every two of ``rows``."""
    import torch

    from tlkit.diagnosis.duplicates import hamming_matrix, signed_bits
    from tlkit.diagnosis.features import unit_rows

    unit = unit_rows(table.features[torch.from_numpy(rows)])
    bits = signed_bits(table.phash_bits[rows])
    thumbs = table.thumbnails[rows]
    return (unit @ unit.T).numpy(), hamming_matrix(bits, bits).numpy(), thumbs @ thumbs.T


def calibrate(args: argparse.Namespace) -> None:
    import tlkit
    from tlkit.diagnosis.features import gather
    from tlkit.models.builder import build

    data = calibration_set(WORK / "doctor-calibration")
    manifest = tlkit.scan(data, val_fraction=0.0, test_fraction=0.0)
    backbone = build("efficientnet_lite0", offline=True)
    table = gather(manifest, backbone, backbone.preprocessing.with_size(args.image_size), cache_dir=args.cache)
    picture = np.array([rel.split("/")[0] + "/" + rel.split("/")[1].split("__")[0] for rel in table.rels])
    variant = np.array([rel.split("__")[1].rsplit(".", 1)[0] for rel in table.rels])
    source = np.array([rel.split("/")[0] for rel in table.rels])
    positives: dict[str, list[tuple[float, int, float]]] = {name: [] for name in VARIANTS}
    negatives = []  # (cos, ham, ncc) of pairs of different originals of one source
    for name in sorted(set(source)):
        rows = np.flatnonzero(source == name)
        cos, ham, ncc = pair_signals(table, rows)
        pic, var = picture[rows], variant[rows]
        originals = np.flatnonzero(var == "original")
        for i in originals:
            for j in np.flatnonzero((pic == pic[i]) & (var != "original")):
                positives[var[j]].append((float(cos[i, j]), int(ham[i, j]), float(ncc[i, j])))
        sub = np.ix_(originals, originals)
        upper = np.triu(np.ones((len(originals), len(originals)), dtype=bool), 1)
        negatives.append(np.stack([cos[sub][upper], ham[sub][upper], ncc[sub][upper]], 1))
    report_calibration(positives, negatives, sorted(set(source)), args)


def accepted(values: np.ndarray, rule: object) -> np.ndarray:
    """Which (cos, ham, corr) rows a DuplicateRule accepts (its own test, on these numbers)."""
    import torch

    cos, ham, corr = (torch.from_numpy(np.ascontiguousarray(values[:, i])) for i in range(3))
    return rule.accepts(cos, ham, corr).numpy()


def report_calibration(positives: dict[str, list[tuple[float, int, float]]], negatives: list[np.ndarray],
                       sources: list[str], args: argparse.Namespace) -> None:
    from dataclasses import replace

    from tlkit.diagnosis.duplicates import DEFAULT_RULE

    lines = ["| copy | cosine min / 5th pct / median | Hamming median / 95th pct / max | thumbnail corr. min / 5th pct |",
             "| --- | --- | --- | --- |"]
    for name, values in positives.items():
        v = np.array(values)
        lines.append(f"| {name} | {v[:, 0].min():.3f} / {np.quantile(v[:, 0], 0.05):.3f} / {np.median(v[:, 0]):.3f} | "
                     f"{np.median(v[:, 1]):.0f} / {np.quantile(v[:, 1], 0.95):.0f} / {v[:, 1].max():.0f} | "
                     f"{v[:, 2].min():.4f} / {np.quantile(v[:, 2], 0.05):.4f} |")
    lines += ["", "| pairs of different originals | pairs | cosine: 3 highest | Hamming: lowest, pairs <= 10 | "
              "thumbnail corr.: 3 highest |", "| --- | --- | --- | --- | --- |"]
    for name, v in zip(sources, negatives):
        lines.append(f"| {name} | {len(v):,} | {', '.join(f'{c:.3f}' for c in np.sort(v[:, 0])[::-1][:3])} | "
                     f"{v[:, 1].min():.0f}, {(v[:, 1] <= 10).sum()} | {', '.join(f'{c:.4f}' for c in np.sort(v[:, 2])[::-1][:3])} |")
    allpos = np.array([p for values in positives.values() for p in values])
    lines += ["", "| rule | " + " | ".join(VARIANTS) + " | " + " | ".join(f"false pairs, {s}" for s in sources) + " |",
              "| --- " * (1 + len(VARIANTS) + len(sources)) + "|"]
    rules = [DEFAULT_RULE] + [replace(DEFAULT_RULE, **change) for change in GRID]
    for rule in rules:
        found = [f"{accepted(np.array(positives[n]), rule).mean():.2f}" for n in VARIANTS]
        false = [str(int(accepted(v, rule).sum())) for v in negatives]
        lines.append(f"| {rule_text(rule)}{' (default)' if rule == DEFAULT_RULE else ''} | " + " | ".join(found + false) + " |")
    lines.append(f"\n{len(allpos)} near-copies in all.")
    text = "\n".join(lines)
    print(text)
    if args.write:
        Path(args.write).write_text(text + "\n", encoding="utf-8")


def rule_text(rule: object) -> str:
    return (f"corr >= {rule.min_thumbnail} & cos >= {rule.min_cosine_with_thumbnail}; or Hamming <= {rule.max_hamming} & "
            f"corr >= {rule.min_thumbnail_with_hash} & cos >= {rule.min_cosine_with_hash}; or cos >= {rule.min_cosine} & "
            f"corr >= {rule.min_thumbnail_with_cosine}")


#: rules compared with the default in the calibration table (changes to DEFAULT_RULE)
GRID = [dict(min_thumbnail=t) for t in (0.99, 0.995, 0.996, 0.998)] + \
       [dict(min_cosine_with_thumbnail=c) for c in (0.0, 0.5)] + \
       [dict(max_hamming=h, min_cosine_with_hash=c) for h in (6, 8, 10) for c in (0.8, 0.85, 0.9)] + \
       [dict(min_thumbnail_with_hash=t) for t in (0.9, 0.97)] + \
       [dict(min_cosine=c) for c in (0.9, 0.93, 0.97)] + [dict(min_thumbnail_with_cosine=t) for t in (0.0, 0.7)]


# ------------------------------------------------------------------------------------ labels and outliers (dev set)

def dev_set(out: Path, n: int = 1800) -> Path:
    """Fashion-MNIST training images 42,000 to 42,000 + n (used by no measure run), in class folders,
    plus six outliers in ``odd/``: white, black and grey frames, uniform noise, two photo tiles."""
    marker = out / ".done"
    if marker.is_file():
        return out
    xs, ys = _read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz"), _read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")
    for i in range(n):
        folder = out / "clean" / FASHION_CLASSES[ys[42000 + i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(xs[42000 + i]).save(folder / f"q{i:04d}__original.png")
    odd = out / "odd"
    odd.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, value in (("white", 255), ("black", 0), ("grey", 128)):
        Image.fromarray(np.full((28, 28), value, np.uint8)).save(odd / f"{name}.png")
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(odd / "noise.png")
    tiles = photo_tiles()
    for k in (3, 40):
        tiles[k].resize((28, 28), Image.LANCZOS).save(odd / f"photo{k}.png")
    marker.write_text("ok")
    return out


def calibrate_labels(args: argparse.Namespace) -> None:
    """Recall of planted label flips in the top 2x planted, per way of ranking, on the dev set (3 seeds)."""

    import tlkit
    from tlkit.diagnosis import probes as probes_mod
    from tlkit.diagnosis.features import gather
    from tlkit.diagnosis.labels import rank_suspects
    from tlkit.diagnosis.outliers import MIN_Z, score_outliers
    from tlkit.models.builder import build

    root = dev_set(WORK / "doctor-dev")
    backbone = build("efficientnet_lite0", offline=True)
    table = gather(tlkit.scan(root / "clean", val_fraction=0, test_fraction=0), backbone,
                   backbone.preprocessing.with_size(args.image_size), cache_dir=args.cache)
    n, n_classes = len(table), len(table.classes)
    rows = {}
    for seed in (1, 2, 3):
        rng = np.random.default_rng(seed)
        flipped = rng.permutation(n)[: int(round(0.05 * n))]
        labels = table.labels.copy()
        labels[flipped] = (labels[flipped] + rng.integers(1, n_classes, len(flipped))) % n_classes
        k = 2 * len(flipped)
        for c in (0.1, 0.5, 2.0):
            probes_mod.PROBE_C = c
            out = probes_mod.probe_probabilities(table.features, labels, np.arange(n), n_classes, folds=5, seed=0)
            for weight in (0.0, 0.25, 0.5, 0.75, 1.0):
                for method in ("self-confidence", "confident-learning"):
                    ranked = [s.row for s in rank_suspects(labels, out.blended(weight), method=method)][:k]
                    rows.setdefault((c, weight, method), []).append(len(set(ranked) & set(flipped)) / len(flipped))
            x = probes_mod.probe_inputs(table.features)
            ranked = [s.row for s in rank_suspects(labels, probes_mod.fit_predict(x, labels, x, n_classes, 0),
                                                   method="self-confidence")][:k]
            rows.setdefault((c, "in-sample", "self-confidence"), []).append(len(set(ranked) & set(flipped)) / len(flipped))
    probes_mod.PROBE_C = 0.5
    lines = ["| probe C | kNN weight | ranking | recall of flips in top 2x planted (3 seeds) |", "| --- | --- | --- | --- |"]
    lines += [f"| {c} | {w} | {m} | {np.mean(v):.3f} ({', '.join(f'{x:.2f}' for x in v)}) |" for (c, w, m), v in rows.items()]
    # outliers: the six odd files, each given the label of a random Fashion class, among the clean images
    both = gather(tlkit.scan(root, val_fraction=0, test_fraction=0), backbone,
                  backbone.preprocessing.with_size(args.image_size), cache_dir=args.cache)
    odd = np.array([rel.startswith("odd/") for rel in both.rels])
    names = sorted({rel.split("/")[1] for rel in both.rels if rel.startswith("clean/")})
    rng = np.random.default_rng(0)
    labels = np.array([names.index(rel.split("/")[1]) if rel.startswith("clean/") else rng.integers(len(names))
                       for rel in both.rels])
    scores = {both.rels[o.row]: o for o in score_outliers(both.features, labels, len(names), both.contrast)}
    clean_z = sorted((o.z for rel, o in scores.items() if not rel.startswith("odd/")), reverse=True)
    listed = sum(o.z >= MIN_Z or o.reason == "blank" for rel, o in scores.items() if not rel.startswith("odd/"))
    lines += ["", f"Outliers ({len(names)} classes, {int((~odd).sum())} clean images, 6 odd files each filed under a "
              f"random class): robust z of the clean images, highest {', '.join(f'{v:.1f}' for v in clean_z[:5])} "
              f"({listed} listed at z >= {MIN_Z:g}); odd files: "
              + ", ".join(f"{Path(r).stem} z {o.z:.1f}{' (blank)' if o.reason == 'blank' else ''}"
                          for r, o in sorted(scores.items()) if r.startswith("odd/"))]
    text = "\n".join(lines)
    print(text)
    if args.write:
        Path(args.write).write_text(text + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------ planted problems

def split_copy(source: Path, out: Path, seed: int = 0) -> Path:
    """A copy of ``source`` as split folders (the split ``tlkit.scan`` makes for class folders)."""
    import tlkit

    manifest = tlkit.scan(source, seed=seed)
    shutil.rmtree(out, ignore_errors=True)
    for split, entries in manifest.splits.items():
        for rel, label in entries:
            target = out / split / manifest.classes[label] / Path(rel).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(manifest.root) / rel, target)
    return out


def plant(data: Path, *, n_copies: int, flip_share: float, seed: int) -> dict:
    """Plant near-copies of training images in test and flip a share of the training labels (files moved
    to another class folder). Returns the truth: copies (train rel, test rel) and flips {rel: (true, given)}."""
    rng = np.random.default_rng(seed)
    train = sorted(p.relative_to(data).as_posix() for p in (data / "train").rglob("*") if p.is_file())
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    picked = rng.permutation(len(train))
    sources = [train[i] for i in picked[:n_copies]]
    copies = []
    for k, rel in enumerate(sources):
        with Image.open(data / rel) as image:
            copy = jpeg(resized(image.convert("RGB"), 0.95), 90)
        target = data / "test" / rel.split("/")[1] / f"planted_{k:02d}.jpg"
        copy.save(target, quality=90)
        copies.append((rel, target.relative_to(data).as_posix()))
    n_flips = int(round(flip_share * len(train)))
    flips = {}
    for i in picked[n_copies:n_copies + n_flips]:
        rel = train[i]
        true = rel.split("/")[1]
        given = str(rng.choice([c for c in classes if c != true]))
        target = f"train/{given}/{Path(rel).name}"
        os.replace(data / rel, data / target)
        flips[target] = (true, given)
    return {"copies": copies, "flips": flips}


def score_duplicates(result: object, copies: list[tuple[str, str]]) -> dict:
    planted = {frozenset(c) for c in copies}
    found = {frozenset(p.paths) for p in result.near_duplicates}
    false = [p for p in result.near_duplicates if frozenset(p.paths) not in planted]
    certain = {frozenset(p.paths) for p in result.near_duplicates if p.certain}
    return {"planted": len(planted), "found": len(planted & found), "false": len(false),
            "planted_certain": len(planted & certain), "false_certain": sum(p.certain for p in false),
            "false_exact": sum(p.kind == "exact" for p in false),
            "false_with_planted": sum(any(Path(x).name.startswith("planted_") for x in p.paths) for p in false),
            "precision": len(planted & found) / max(1, len(found))}


def recall_at(ranked: list[str], flips: dict, k: int) -> float:
    return len(set(ranked[:k]) & set(flips)) / max(1, len(flips))


def label_rankings(data: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    """Paths ranked most suspect first by each way of scoring, on the cached features (the doctor's own
    probes and folds): in-sample and out-of-fold self-confidence, confident learning on the linear probe
    and probe + kNN votes (the doctor's default: self-confidence on those)."""

    import tlkit
    from tlkit.diagnosis.duplicates import find_duplicates
    from tlkit.diagnosis.examine import KNN_WEIGHT, picture_groups
    from tlkit.diagnosis.features import gather
    from tlkit.diagnosis.labels import rank_suspects
    from tlkit.diagnosis.probes import fit_predict, probe_inputs, probe_probabilities
    from tlkit.models.builder import build

    backbone = build("efficientnet_lite0", offline=True)
    table = gather(tlkit.scan(data), backbone, backbone.preprocessing.with_size(args.image_size), cache_dir=args.cache)
    groups = picture_groups(len(table), find_duplicates(table), [])
    n_classes = len(table.classes)
    probes = probe_probabilities(table.features, table.labels, groups, n_classes, folds=5, seed=0)
    x = probe_inputs(table.features)
    in_sample = fit_predict(x, table.labels, x, n_classes, 0)
    ways = {"self-confidence, in-sample probe": (in_sample, "self-confidence"),
            "self-confidence, out-of-fold probe": (probes.blended(0.0), "self-confidence"),
            "self-confidence, out-of-fold probe + kNN (the doctor's ranking)": (probes.blended(KNN_WEIGHT), "self-confidence"),
            "confident learning, out-of-fold probe": (probes.blended(0.0), "confident-learning"),
            "confident learning, out-of-fold probe + kNN": (probes.blended(KNN_WEIGHT), "confident-learning")}
    return {name: [table.rels[s.row] for s in rank_suspects(table.labels, probs, method=method)]
            for name, (probs, method) in ways.items()}


def measure(args: argparse.Namespace) -> None:
    import tlkit
    from tlkit.data import export_digits

    if args.dataset == "digits":
        source = Path(export_digits(WORK / "digits", image_size=64))
        label = "digits (1,797 images, split 70/15/15 into split folders)"
    else:
        source = export_fashion(WORK / f"fashion-{args.train_per_class}", args.train_per_class)
        label = f"Fashion-MNIST ({args.train_per_class}/class train, 20/class val, 1,000 test)"
    data = split_copy(source, WORK / f"doctor-{args.dataset}-planted") if args.dataset == "digits" else None
    if data is None:
        data = WORK / "doctor-fashion-planted"
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(source, data)
    truth = plant(data, n_copies=args.copies, flip_share=args.flips, seed=args.seed)
    cache = Path(args.cache)
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
    calls = []
    for _ in range(2):
        start = time.perf_counter()
        result = tlkit.doctor(data, cache_dir=cache, image_size=args.image_size, offline=True)
        calls.append((time.perf_counter() - start, result.timings["features_computed"]))
    assert before == {p: p.stat().st_mtime_ns for p in data.rglob("*")}, "the doctor changed the data"
    dup = score_duplicates(result, truth["copies"])
    k = 2 * len(truth["flips"])
    rankings = label_rankings(data, args)
    doctor_ranked = [s.path for s in result.suspect_labels]
    write_measurement(args, label, result, truth, dup, calls, k, rankings, doctor_ranked)


def write_measurement(args: argparse.Namespace, label: str, result: object, truth: dict, dup: dict, calls: list,
                      k: int, rankings: dict[str, list[str]], doctor_ranked: list[str]) -> None:
    import torch

    n = sum(sum(c.values()) for c in result.counts.values())
    size = result.settings["image_size"]
    baseline = recall_at(rankings["self-confidence, out-of-fold probe"], truth["flips"], k)
    lines = [f"\n## Data doctor: {label}, EfficientNet-Lite0, {size} px, CPU",
             f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}; command: "
             f"`uv run python bench/doctor.py {' '.join(sys.argv[1:])}`. {n} images after planting "
             f"{dup['planted']} near-copies (train image resized to 95%, JPEG quality 90, into test) and "
             f"flipping {len(truth['flips'])} training labels ({args.flips:.0%}, seed {args.seed}).\n",
             "| check | result |", "| --- | --- |",
             f"| planted near-duplicates found (recall) | {dup['found']}/{dup['planted']} |",
             f"| other pairs reported | {dup['false']} ({dup['false_exact']} exact copies already in the data, "
             f"{dup['false_with_planted']} involving a planted copy) |",
             f"| precision (planted found / pairs reported) | {dup['precision']:.2f} |",
             f"| copies for certain (errors): planted / other pairs | {dup['planted_certain']}/{dup['planted']} / "
             f"{dup['false_certain']}/{dup['false']} |",
             f"| suspect labels listed | {len(result.suspect_labels)} |",
             f"| flips in the doctor's top {k} (2x planted) | {recall_at(doctor_ranked, truth['flips'], k):.2f} |"]
    for name, ranked in rankings.items():
        r = recall_at(ranked, truth["flips"], k)
        lines.append(f"| flips in the top {k}: {name} | {r:.2f} ({r / max(baseline, 1e-9):.2f}x out-of-fold self-confidence) |")
    lines += [f"| wall time, first call | {calls[0][0]:.1f} s ({calls[0][1]} images through the backbone) |",
              f"| wall time, second call (warm cache) | {calls[1][0]:.1f} s ({calls[1][1]} through the backbone) |",
              f"| outliers listed | {len(result.outliers)} |",
              f"| classes that would gain (slope >= 0.02 / doubling) | "
              f"{', '.join(c.class_name for c in result.learning_curves if c.would_gain) or 'none'} |"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cal = sub.add_parser("calibrate", help="measure near-copy similarities on images of no benchmark folder")
    cal.add_argument("--image-size", type=int, default=None)
    cal.add_argument("--cache", default=str(WORK / "doctor-cache"))
    cal.add_argument("--write", default=None, help="also write the tables to this file")
    lab = sub.add_parser("calibrate-labels", help="label-flip rankings and outlier scores on a dev set of no benchmark")
    lab.add_argument("--image-size", type=int, default=None)
    lab.add_argument("--cache", default=str(WORK / "doctor-cache"))
    lab.add_argument("--write", default=None)
    mea = sub.add_parser("measure", help="plant near-copies and label flips, run the doctor twice, score it")
    mea.add_argument("dataset", choices=["fashion", "digits"])
    mea.add_argument("--train-per-class", type=int, default=100)
    mea.add_argument("--image-size", type=int, default=None)
    mea.add_argument("--copies", type=int, default=20)
    mea.add_argument("--flips", type=float, default=0.05)
    mea.add_argument("--seed", type=int, default=0)
    mea.add_argument("--cache", default=str(WORK / "doctor-cache"))
    mea.add_argument("--results", default="bench/REALDATA.md", help="append the section here ('' to only print)")
    args = parser.parse_args()
    os.environ.setdefault("TLKIT_OFFLINE", "1")
    if args.command == "calibrate":
        calibrate(args)
    elif args.command == "calibrate-labels":
        calibrate_labels(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
