"""Record training dynamics from a Lightning ``Trainer`` with a callback.

>>> from analysis.integrations.lightning import DynamicsCallback      # doctest: +SKIP
>>> trainer = L.Trainer(max_epochs=10, callbacks=[DynamicsCallback("runs/my-run")])  # doctest: +SKIP

Two modes, recorded in ``run.json["source"]``:

``forward_pass`` (default)
    The logits of every training step. ``training_step`` must return a mapping with the loss and
    the logits: ``return {"loss": loss, "logits": logits}`` (the logits are detached by the
    recorder; returning them costs nothing). With ``accumulate_grad_batches > 1`` every
    micro-batch is recorded.
``eval_pass``
    At the end of every training epoch, one pass in evaluation mode over ``eval_dataloader``
    (default: the trainer's training loader, which in distributed training already holds this
    process's part).

Example ids and labels are read from each batch (``batch["example_id"]`` by default, or a
position for tuple batches), never inferred from positions in the dataset, so shuffling,
gradient accumulation and distributed samplers are safe. Each process writes its own shard
``dynamics/rank-<global_rank>.parquet``; global rank 0 writes ``run.json`` and
``examples.parquet``.

Lightning (``lightning`` or the standalone ``pytorch_lightning``) is imported only when the
callback class is first used, so importing this module never requires it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from analysis import schema as S
from analysis.integrations import batch_get
from analysis.integrations.capture import _default_forward, _to_device, extract_logits
from analysis.integrations.distributed import save_recorder
from analysis.recorder import DynamicsRecorder

__all__ = ["DynamicsCallback", "DynamicsCallbackMixin"]  # noqa: F822 (lazy)

_SOURCES = S.RECORDING_SOURCES


def _callback_base() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback  # type: ignore[assignment]
        except ImportError as exc:
            raise ImportError(
                "The Lightning integration needs Lightning: `pip install 'datamap[lightning]'`."
            ) from exc
    return Callback  # type: ignore[no-any-return]


class DynamicsCallbackMixin:
    """The logic of :data:`DynamicsCallback` (a ``lightning.pytorch.Callback``).

    Parameters
    ----------
    run_dir : path, optional
        Run directory written when training ends; without it, call :meth:`save`.
    source : {"forward_pass", "eval_pass"}, default "forward_pass"
    id_key : str or int, default "example_id"
        Where each batch carries the example ids (a key, or a position in a tuple batch).
    label_key : str or int, default "label"
        Where each batch carries the gold labels.
    logits_key : str, default "logits"
        Key of the logits in the mapping ``training_step`` returns (``forward_pass``).
    forward_fn : callable ``(module, batch) -> output``, optional
        Forward call of the evaluation pass. Default: ``module(batch[input_key])`` when
        ``input_key`` is given, else a mapping batch as keyword arguments (without ids and
        labels) or ``module(batch[0])``.
    input_key : str or int, optional
        See ``forward_fn``.
    eval_dataloader : iterable, optional
        Loader of the evaluation pass (default: ``trainer.train_dataloader``).
    class_names, examples, keep_logits
        As in :meth:`analysis.recorder.DynamicsRecorder.save`.
    logits_fn : callable
        Picks the logits from a model output (evaluation pass).

    Attributes
    ----------
    recorder : DynamicsRecorder
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        source: Literal["forward_pass", "eval_pass"] = "forward_pass",
        id_key: str | int = S.EXAMPLE_ID,
        label_key: str | int = "label",
        logits_key: str = "logits",
        forward_fn: Callable[[Any, Any], Any] | None = None,
        input_key: str | int | None = None,
        eval_dataloader: Any = None,
        class_names: list[str] | None = None,
        examples: pd.DataFrame | None = None,
        keep_logits: bool = False,
        logits_fn: Callable[[Any], Any] = extract_logits,
    ) -> None:
        if source not in _SOURCES:
            raise ValueError(f"Expected `source` in {_SOURCES}, got {source!r}.")
        super().__init__()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.source = source
        self.id_key = id_key
        self.label_key = label_key
        self.logits_key = logits_key
        self.forward_fn = forward_fn
        self.input_key = input_key
        self.eval_dataloader = eval_dataloader
        self.class_names = class_names
        self.examples = examples
        self.logits_fn = logits_fn
        self.recorder = DynamicsRecorder(keep_logits=keep_logits)
        self._rank = 0

    # -- forward_pass ------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.source != S.SOURCE_FORWARD_PASS:
            return
        if not isinstance(outputs, Mapping) or self.logits_key not in outputs:
            got = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ValueError(
                f"Expected `training_step` to return a mapping with {self.logits_key!r} "
                f"(e.g. `return {{'loss': loss, '{self.logits_key}': logits}}`), got {got}. "
                "Or record with source='eval_pass'."
            )
        ids = batch_get(batch, self.id_key, what="example ids")
        labels = batch_get(batch, self.label_key, what="gold labels")
        self.recorder.update(ids, outputs[self.logits_key], labels, epoch=int(trainer.current_epoch))

    # -- eval_pass ---------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.source != S.SOURCE_EVAL_PASS:
            return
        import torch

        loader = self.eval_dataloader if self.eval_dataloader is not None else trainer.train_dataloader
        was_training = pl_module.training
        pl_module.eval()
        epoch = int(trainer.current_epoch)
        try:
            with torch.no_grad():
                for batch in loader:
                    batch = _to_device(batch, pl_module.device)
                    ids = batch_get(batch, self.id_key, what="example ids")
                    labels = batch_get(batch, self.label_key, what="gold labels")
                    if self.forward_fn is not None:
                        out = self.forward_fn(pl_module, batch)
                    else:
                        out = _default_forward(pl_module, batch, self.id_key, self.input_key)
                    self.recorder.update(ids, self.logits_fn(out), labels, epoch=epoch)
        finally:
            pl_module.train(was_training)

    # -- output --------------------------------------------------------------------------------------
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._rank = int(trainer.global_rank)
        if self.run_dir is not None:
            self.save()

    def save(self, run_dir: str | os.PathLike[str] | None = None) -> Path:
        """Write this process's shard (and, on global rank 0, ``run.json``/examples).

        Call it on every process: without ``examples``, the ids and labels seen by all processes
        are gathered so that rank 0's ``examples.parquet`` lists them all.
        """
        target = run_dir if run_dir is not None else self.run_dir
        if target is None:
            raise ValueError("Expected a `run_dir` (or `run_dir` at construction), got None.")
        self.recorder.rank = self._rank
        return save_recorder(self.recorder, target, class_names=self.class_names,
                             examples=self.examples, source=self.source)


_cache: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    # ``DynamicsCallback`` is built on first access, so importing this module needs no Lightning.
    if name == "DynamicsCallback":
        if name not in _cache:
            cls = type("DynamicsCallback", (DynamicsCallbackMixin, _callback_base()), {})
            cls.__module__ = __name__
            cls.__doc__ = DynamicsCallbackMixin.__doc__
            _cache[name] = cls
        return _cache[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
