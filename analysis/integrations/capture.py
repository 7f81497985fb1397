"""Capture penultimate features and final logits of a split into the run store.

The OOD scorers (Mahalanobis, relative Mahalanobis, k-NN) work on penultimate-layer features,
the logit-based ones (MSP, max-logit, energy) on final logits. :func:`capture_split` runs a model
once over a data loader in evaluation mode and stores both, row-aligned with the example ids
carried by each batch, as ``features/<split>.npy`` and ``logits/<split>.npy``.

Features come from a forward hook on a named module (its output, or its input: the input of the
classification head is the usual "penultimate" representation) or from a function you give.

>>> ids, feats, logits = capture_split(                           # doctest: +SKIP
...     "runs/my-run", "test", model, test_loader, layer="head", hook="input")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from analysis import runstore
from analysis import schema as S
from analysis.integrations import batch_get

__all__ = ["CaptureResult", "capture_split", "extract_logits"]

_HOOKS = ("input", "output")
_LABEL_KEYS = ("label", "labels", "label_ids")


@dataclass
class CaptureResult:
    """What :func:`capture_split` stored.

    Attributes
    ----------
    example_ids : ndarray (n_examples,)
    features : ndarray of float32 (n_examples, n_features) or None
    logits : ndarray of float32 (n_examples, n_classes) or None
    """

    example_ids: NDArray[Any]
    features: NDArray[np.float32] | None
    logits: NDArray[np.float32] | None

    def __iter__(self) -> Any:
        return iter((self.example_ids, self.features, self.logits))


def extract_logits(output: Any) -> Any:
    """Return the logits tensor of a model output.

    Accepts a tensor, a mapping or ``ModelOutput`` with ``"logits"``, or a tuple ``(loss, logits,
    ...)`` / ``(logits, ...)`` (the first 2-D tensor).

    Raises
    ------
    TypeError
        No logits can be found in ``output``.
    """
    if hasattr(output, "ndim") and hasattr(output, "shape"):
        return output
    if isinstance(output, Mapping):
        if "logits" in output:
            return output["logits"]
    elif hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        for item in output:
            if getattr(item, "ndim", 0) == 2:
                return item
    raise TypeError(
        f"Expected the model to return logits (a tensor, a mapping with 'logits', or a tuple), got "
        f"{type(output).__name__}. Pass `logits_fn` to pick them out."
    )


def _default_forward(
    model: Any, batch: Any, id_key: str | int, input_key: str | int | None
) -> Any:
    if input_key is not None:
        return model(batch_get(batch, input_key, what="model input"))
    if isinstance(batch, Mapping):
        skip = {id_key, *_LABEL_KEYS}
        return model(**{k: v for k, v in batch.items() if k not in skip})
    return model(batch[0])


def _to_device(x: Any, device: Any) -> Any:
    if device is None:
        return x
    if hasattr(x, "to") and hasattr(x, "device"):
        return x.to(device)
    if isinstance(x, Mapping):
        return type(x)({k: _to_device(v, device) for k, v in x.items()})  # type: ignore[call-arg]
    if isinstance(x, (tuple, list)):
        return type(x)(_to_device(v, device) for v in x)
    return x


def capture_split(
    run_dir: str | os.PathLike[str] | None,
    split: str,
    model: Any,
    loader: Iterable[Any],
    *,
    layer: str | None = None,
    hook: Literal["input", "output"] = "output",
    features_fn: Callable[[Any, Any], Any] | None = None,
    id_key: str | int = S.EXAMPLE_ID,
    input_key: str | int | None = None,
    forward_fn: Callable[[Any, Any], Any] | None = None,
    logits_fn: Callable[[Any], Any] = extract_logits,
    device: Any = None,
    store_logits: bool = True,
) -> CaptureResult:
    """Run ``model`` over ``loader`` and store penultimate features and logits for ``split``.

    The model is put in evaluation mode under ``torch.no_grad()`` and restored to its previous mode
    afterwards. Batch order does not matter: ids come from each batch.

    Parameters
    ----------
    run_dir : path or None
        Run directory to write ``features/<split>.npy`` and ``logits/<split>.npy`` (with ids) to;
        ``None`` only returns the arrays.
    split : str
        Split name (``train``, ``test``, ``ood:<name>``...).
    model : torch.nn.Module
    loader : iterable of batches
        Mapping batches (``{"example_id": ..., "x": ..., "label": ...}``) or tuple batches.
    layer : str, optional
        Name of a submodule (as in ``model.named_modules()``) to hook for the features.
    hook : {"output", "input"}
        Take the hooked module's output, or its (first positional) input — the input of the final
        linear layer is the penultimate representation.
    features_fn : callable ``(model, batch) -> Tensor (batch, n_features)``, optional
        Compute the features yourself instead of a hook (called under ``no_grad``).
    id_key : str or int, default ``"example_id"``
        Where the example ids sit in each batch.
    input_key : str or int, optional
        Call ``model(batch[input_key])``. By default a mapping batch is passed as keyword arguments
        (without the id and label keys) and a tuple batch as ``model(batch[0])``.
    forward_fn : callable ``(model, batch) -> output``, optional
        Replaces the default forward call.
    logits_fn : callable ``output -> Tensor (batch, n_classes)``
        Picks the logits out of the model output (default: :func:`extract_logits`).
    device : torch.device or str, optional
        Move each batch there first (default: leave batches as they come).
    store_logits : bool, default True
        Also store the logits (set False for features only).

    Returns
    -------
    CaptureResult
        ``(example_ids, features, logits)``; ``features`` is None when neither ``layer`` nor
        ``features_fn`` was given.

    Raises
    ------
    ValueError
        Unknown ``layer`` or ``hook``, both ``layer`` and ``features_fn`` given, an empty loader,
        or batches whose sizes disagree.
    KeyError
        A batch without ids under ``id_key``.
    """
    import torch

    if hook not in _HOOKS:
        raise ValueError(f"Expected `hook` in {_HOOKS}, got {hook!r}.")
    if layer is not None and features_fn is not None:
        raise ValueError("Expected either `layer` or `features_fn`, got both.")
    handle = None
    grabbed: list[Any] = []
    if layer is not None:
        modules = dict(model.named_modules())
        if layer not in modules:
            names = [n for n in modules if n][:20]
            raise ValueError(f"Expected `layer` to name a submodule of the model, got {layer!r}; "
                             f"submodules include {names}.")

        def _hook(_mod: Any, inputs: Any, output: Any) -> None:
            grabbed.append(inputs[0] if hook == "input" else output)

        handle = modules[layer].register_forward_hook(_hook)

    was_training = bool(getattr(model, "training", False))
    ids_parts: list[Any] = []
    feat_parts: list[Any] = []
    logit_parts: list[Any] = []
    try:
        model.eval()
        with torch.no_grad():
            for batch in loader:
                ids = batch_get(batch, id_key, what="example ids")
                ids_np = ids.detach().cpu().numpy() if hasattr(ids, "detach") else np.asarray(ids)
                batch = _to_device(batch, device)
                grabbed.clear()
                if forward_fn is not None:
                    out = forward_fn(model, batch)
                else:
                    out = _default_forward(model, batch, id_key, input_key)
                feats = None
                if features_fn is not None:
                    feats = features_fn(model, batch)
                elif layer is not None:
                    if len(grabbed) != 1:
                        raise ValueError(
                            f"Expected the hooked module {layer!r} to run once per batch, got "
                            f"{len(grabbed)} calls. Hook a module that runs once, or pass `features_fn`."
                        )
                    feats = grabbed[0]
                n = len(ids_np)
                if store_logits:
                    z = logits_fn(out)
                    if tuple(z.shape[:1]) != (n,):
                        raise ValueError(
                            f"Expected logits of shape ({n}, n_classes) for a batch of {n} ids, "
                            f"got {tuple(z.shape)}."
                        )
                    logit_parts.append(z.detach().float().cpu().numpy())
                if feats is not None:
                    f = feats.detach().float().reshape(feats.shape[0], -1).cpu().numpy()
                    if f.shape[0] != n:
                        raise ValueError(
                            f"Expected features of shape ({n}, n_features) for a batch of {n} ids, "
                            f"got {tuple(feats.shape)}."
                        )
                    feat_parts.append(f)
                ids_parts.append(ids_np.reshape(-1))
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    if not ids_parts:
        raise ValueError(f"Expected at least one batch in `loader` for split {split!r}, got none.")
    all_ids = np.concatenate(ids_parts)
    if all_ids.dtype.kind in "US":
        all_ids = all_ids.astype(object)
    features = np.concatenate(feat_parts).astype(np.float32) if feat_parts else None
    logits = np.concatenate(logit_parts).astype(np.float32) if logit_parts else None
    if run_dir is not None:
        if features is not None:
            runstore.save_features(run_dir, split, all_ids, features)
        if logits is not None:
            runstore.save_logits(run_dir, split, all_ids, logits)
    return CaptureResult(all_ids, features, logits)
