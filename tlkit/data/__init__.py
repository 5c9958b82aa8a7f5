"""Datasets on disk: find the images, split them, load them safely, and check them.

Two folder layouts are understood (detected automatically by :func:`scan`)::

    root/<class>/<image>                    "class-folders": tlkit makes a stratified split
    root/{train,val,test}/<class>/<image>   "split-folders": the given split is used as is

The result is a :class:`Manifest`: sorted class names, and per split a sorted list of
``(path relative to root, label)``. It is saved as JSON (``splits.json``) so a run can be
repeated on exactly the same files. :func:`load_image` is the one image loader used by every
part of tlkit; :func:`check` finds the bad files and data problems before any training starts.

The modules, each on the ones above it:

- :mod:`tlkit.data.images`: :func:`load_image` and the name rules (image extensions, hidden
  entries, :func:`safe_name`);
- :mod:`tlkit.data.manifest`: :class:`Manifest` and :data:`SPLITS`;
- :mod:`tlkit.data.scan`: the folder layouts and the split rule (:func:`scan`, :func:`list_images`);
- :mod:`tlkit.data.check`: :func:`check`, :class:`CheckReport`, :class:`Problem`;
- :mod:`tlkit.data.datasets`: the torch datasets (:class:`ImageDataset`, :class:`DecodedImages`);
- :mod:`tlkit.data.digits`: :func:`export_digits`, the demo data.

Example::

    >>> manifest = scan("data/", val_fraction=0.15, test_fraction=0.15, seed=0)  # doctest: +SKIP
    >>> report = check(manifest)                                                # doctest: +SKIP
    >>> if not report.ok: print(*(p.message for p in report.errors), sep="\\n")  # doctest: +SKIP
"""

from __future__ import annotations

from tlkit.data.check import CheckReport, Problem, check
from tlkit.data.datasets import DecodedImages, ImageDataset, collate_readable
from tlkit.data.digits import export_digits
from tlkit.data.images import IMAGE_EXTENSIONS, load_image, safe_name
from tlkit.data.manifest import SPLITS, Manifest
from tlkit.data.scan import list_images, scan

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "CheckReport",
    "DecodedImages",
    "ImageDataset",
    "Manifest",
    "Problem",
    "check",
    "collate_readable",
    "export_digits",
    "list_images",
    "load_image",
    "safe_name",
    "scan",
]
