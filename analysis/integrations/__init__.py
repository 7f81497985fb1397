"""Hooks from training frameworks into the run store.

Each submodule imports its framework lazily, so ``import analysis.integrations.hf`` works without
transformers installed (the error, with an install hint, comes when a framework class is used):

* :mod:`analysis.integrations.capture` — penultimate features and final logits of a split
  (plain PyTorch).
* :mod:`analysis.integrations.hf` — ``DynamicsTrainer`` / ``with_dynamics`` for the Hugging Face
  ``Trainer``.
* :mod:`analysis.integrations.lightning` — ``DynamicsCallback`` for Lightning.

The plain training loop needs no integration: :class:`analysis.recorder.DynamicsRecorder`.
See ``docs/integrations.md`` for runnable examples.
"""

from __future__ import annotations

from typing import Any

__all__ = ["batch_get"]


def batch_get(batch: Any, key: str | int, *, what: str) -> Any:
    """Return ``batch[key]`` for a mapping or a sequence batch, with a clear error if absent.

    Parameters
    ----------
    batch : mapping or sequence
        One batch from a data loader.
    key : str or int
        Key (mapping batches) or position (tuple/list batches).
    what : str
        What the value is, for the error message (``"example ids"``).

    Raises
    ------
    KeyError
        The batch has no such key or position.
    """
    try:
        return batch[key]
    except (KeyError, IndexError, TypeError) as exc:
        keys = list(batch.keys()) if hasattr(batch, "keys") else f"a {type(batch).__name__} of {len(batch)}"
        raise KeyError(
            f"Expected the batch to carry the {what} under {key!r}, got keys {keys}. Add the column "
            "to the dataset (ids must travel with the batch, not be inferred from positions) or pass "
            "the right key."
        ) from exc
