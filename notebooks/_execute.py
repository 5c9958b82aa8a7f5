"""Executes the notebooks of this folder with real settings and keeps their outputs, scrubbed of the
machine's paths, so that a reader on GitHub sees a real run. ``_make_notebooks.py --execute`` calls
:func:`execute`; the settings are :data:`SETTINGS` (the notebooks read them from ``TLKIT_NB_*``), and
the note at the top of each notebook (:data:`RUN_NOTE`) says what they were.

Everything a run writes (data, runs, the feature cache) goes to a work folder outside the repository
(default ``/tmp/tlkit-notebooks``). Outputs: paths under that folder are shown relative to it, the
virtual environment's ``site-packages`` by that name, the home folder as ``~``; stderr progress bars and tqdm's
IProgress warning are dropped; figures are drawn at :data:`FIGURE_DPI`; an error, or an
absolute path left in an output, stops the script (the notebook is not written).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

#: what the committed outputs were made with (TLKIT_NB_<KEY> in the notebooks)
SETTINGS = {"BACKBONE": "efficientnet_lite0", "PRETRAINED": "1", "IMAGE_SIZE": "64", "PER_CLASS": "50",
            "MAX_MINUTES": "3"}
#: where they were made: edit it when you regenerate the outputs elsewhere (the note is a cell source, so it
#: cannot be measured without the sources changing from one machine to the next)
MACHINE = "2 shared CPU cores, no GPU"
RUN_NOTE = (f"*The outputs below are from a real run (`python notebooks/_make_notebooks.py --execute`): "
            f"`{SETTINGS['BACKBONE']}` with its packaged ImageNet weights, {SETTINGS['IMAGE_SIZE']} px images, "
            f"{SETTINGS['PER_CLASS']} images per digit, at most {SETTINGS['MAX_MINUTES']} minutes per training stage, "
            f"on {MACHINE}. The notebook's defaults (all 1,797 digits, 128 px, the recipes' own "
            "budgets) take longer.*")
#: an output that still holds one of these after scrubbing stops the script
ABSOLUTE = re.compile(r"(?<![\w.])/(tmp|work|home|root|Users|var|private|opt|usr)/")
_SITE = re.compile(r"[^\s'\"(]*/site-packages/")
_PROGRESS = re.compile(r"\r|\d+%\|")  # tqdm / rich progress redraws
#: stderr noise of this kernel, not of tlkit (tqdm without ipywidgets)
_NOISE = ("TqdmWarning: IProgress not found", "from .autonotebook import tqdm")
#: figures in the outputs (matplotlib's default is 100): smaller files, still legible
FIGURE_DPI = 80


def scrub_text(text: str, work: str) -> str:
    """``text`` with ``work/`` removed, ``work`` shown as ``.``, any ``.../site-packages/`` shortened, the home folder as ``~``."""
    text = text.replace(work + os.sep, "").replace(work, ".")
    text = _SITE.sub("site-packages/", text)
    return text.replace(os.path.expanduser("~") + os.sep, "~" + os.sep)  # the torch / timm caches


def scrub(nb: Any, work: str) -> None:
    """Scrub every code cell's outputs in place (see the module); drop stderr progress redraws."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = out["text"]
                if out.get("name") == "stderr":
                    text = "".join(line for line in text.splitlines(keepends=True)
                                   if not _PROGRESS.search(line) and not any(n in line for n in _NOISE))
                if not text.strip():
                    continue
                out["text"] = scrub_text(text, work)
            for mime, value in (out.get("data") or {}).items():
                if mime.startswith("text/") or mime.endswith("json"):
                    out["data"][mime] = scrub_text(value, work) if isinstance(value, str) else value
            kept.append(out)
        cell.outputs = kept


def problems(nb: Any) -> list[str]:
    """Error outputs and absolute machine paths left in a notebook's outputs."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "error":
                found.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            texts = [out.get("text", "")] + [v for k, v in (out.get("data") or {}).items()
                                             if not k.startswith("image/") and isinstance(v, str)]
            found += [f"cell {i}: absolute path {m.group(0)!r}" for t in texts for m in [ABSOLUTE.search(t)] if m]
    return found


def execute(folder: Path, names: list[str], work: Path) -> None:
    """Execute ``folder/<name>`` for each name in ``work`` with :data:`SETTINGS`, scrub, write back."""
    import nbclient
    import nbformat

    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {f"TLKIT_NB_{k}": v for k, v in SETTINGS.items()}
    env.update(TLKIT_NB_WORK="nb-work", TLKIT_CACHE_DIR=str(work / "cache"), TLKIT_OFFLINE="1",
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    (work / "mplconfig").mkdir(exist_ok=True)
    (work / "mplconfig" / "matplotlibrc").write_text(f"figure.dpi: {FIGURE_DPI}\n")
    env["MPLCONFIGDIR"] = str(work / "mplconfig")
    os.environ.update(env)  # the kernel inherits them
    for name in names:
        path = folder / name
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        client = nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3", record_timing=False,
                                         allow_errors=True, resources={"metadata": {"path": str(work)}})
        client.execute()
        scrub(nb, str(work))
        left = problems(nb)
        if left:
            raise SystemExit(f"{name}: not written:\n  " + "\n  ".join(left))
        nbformat.write(nb, path)
        print(f"{name}: {time.perf_counter() - start:.0f} s, {path.stat().st_size / 1024:.0f} KiB", flush=True)
