"""Grad-CAM figures for people: the image, the overlay and a colour bar, with a caption saying which
class the heat map is for, its probability, the prediction and the layer group explained.

:func:`explanation_png` draws one :class:`~tlkit.models.explain.Explanation` (outside pyplot, no
global state); ``tlkit explain`` writes one such PNG per image through
:func:`tlkit.models.explain.write_overlays` (``render=explanation_png``).
"""

from __future__ import annotations

import io

from tlkit._io import readable_text
from tlkit.models.explain import Explanation


def caption(exp: Explanation) -> str:
    """``heat map for 'rust' (p = 0.93; predicted: rust) · layer blocks.5, 7x7 map``."""
    said = "the prediction" if exp.class_name == exp.predicted else f"predicted: {readable_text(exp.predicted)}"
    where = f"layer {exp.layer}" + (f", {exp.map_size[0]}x{exp.map_size[1]} map" if exp.map_size[0] else "")
    return f"heat map for {readable_text(exp.class_name)!r} (p = {exp.probability:.2f}; {said}) - {where}"


def explanation_png(exp: Explanation) -> bytes:
    """Image | overlay | colour bar (0: no evidence, 1: the strongest) with the caption, as PNG bytes."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.2, 3.8), dpi=110)
    FigureCanvasAgg(figure)
    left, right, scale = figure.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 0.05]})
    for axes, picture, title in ((left, exp.image, readable_text(exp.source.rsplit("/", 1)[-1])),
                                 (right, exp.overlay(), "Grad-CAM overlay")):
        axes.imshow(picture)
        axes.set_title(title, fontsize=8)
        axes.axis("off")
    bar = figure.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), cax=scale)
    bar.set_label("evidence for the class (relative)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    figure.suptitle(caption(exp), fontsize=8, wrap=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
