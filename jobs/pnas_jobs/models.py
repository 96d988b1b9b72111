"""The classifier itself: a timm model with the run's weights (local, in object storage, from the
hub, or random). Used by convert (which exports it), the PyTorch backend (which runs it) and the
demo; torch and timm are imported only when a model is loaded."""

from __future__ import annotations

from pathlib import Path

from pnas_jobs.errors import UserError
from pnas_jobs.storage import NotFound, StorageSettings, open_object


def _unwrap_state_dict(loaded) -> dict:
    if isinstance(loaded, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not loaded:
        raise UserError("the weights file holds no state dict (expected a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def fetch_weights(weights: str, work: Path) -> Path | None:
    """The weights file on this machine (downloaded when in object storage); None for 'timm' and 'random'."""
    if weights in ("timm", "random"):
        return None
    store, key = open_object(weights, StorageSettings.from_env())
    try:
        return store.fetch(key, work / "weights")
    except NotFound:
        raise UserError(f"spec.model.weights: {weights} does not exist") from None


def load_model(name: str, weights: str, path: Path | None = None):
    """The timm model in eval mode, its weights record, and its number of classes.

    `path` is the fetched weights file when `weights` names one (fetch_weights)."""
    import timm
    import torch

    if not timm.is_model(name):
        raise UserError(f"spec.model.name: {name!r} is not a timm model (see timm.list_models())")
    source = {"weights": weights}
    if weights == "random":
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False)
    elif weights == "timm":
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as error:  # hub unreachable, no weights published, ...
            raise UserError(
                f"cannot load pretrained weights for {name} from the hub ({type(error).__name__}: {error}); "
                "offline, set spec.model.weights to a local .pth, an s3:// object or 'random'"
            ) from None
    else:
        try:
            state = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except UserError:
            raise
        except Exception as error:
            raise UserError(f"spec.model.weights: cannot read {weights} as a PyTorch state dict: {error}") from None
        cfg = timm.models.get_pretrained_cfg(name)
        classifier = cfg.classifier if cfg else None
        head = state.get(f"{classifier}.weight") if classifier else None
        num_classes = int(head.shape[0]) if head is not None else None
        model = timm.create_model(name, pretrained=False, **({"num_classes": num_classes} if num_classes else {}))
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as error:  # a parameter of another shape: other weights, or another model
            first = str(error).strip().splitlines()[-1].strip()
            raise UserError(f"spec.model.weights: {weights} does not fit {name}: {first}") from None
        if missing or unexpected:
            raise UserError(
                f"spec.model.weights: {weights} does not fit {name}: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
    model.eval()
    return model, source, int(model.num_classes)
