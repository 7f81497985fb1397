"""Record training dynamics inside the Hugging Face ``Trainer``.

``DynamicsTrainer`` is a drop-in ``transformers.Trainer`` that feeds a
:class:`~analysis.recorder.DynamicsRecorder` and writes the run at the end of training. For your
own Trainer subclass (or a library's, such as TRL's), build the same thing with
:func:`with_dynamics`.

Two modes, recorded in ``run.json["source"]``:

``forward_pass`` (default, as the original cartography code)
    The logits of every training step, taken in ``compute_loss`` (train mode: dropout on, weights
    changing within the epoch). Costs nothing extra. With ``gradient_accumulation_steps > 1``
    every micro-batch is recorded.
``eval_pass``
    At the end of every epoch, one extra pass over the training set in evaluation mode (no dropout,
    the epoch's final weights), batched like the evaluation loop. Costs one inference epoch.

How example ids reach the recorder
----------------------------------
Give every training example an id column (default ``"example_id"``). The Trainer drops dataset
columns that ``model.forward`` does not accept (``remove_unused_columns=True``, the default); the
trainer adds the id column to the kept columns, so ids survive that pruning both for
``datasets.Dataset`` and for plain PyTorch datasets, and then pops the ids out of each batch
before the model sees them (in ``compute_loss`` and ``prediction_step``). With
``remove_unused_columns=False`` the same popping applies. Ids are never inferred from positions,
so shuffling, gradient accumulation and distributed sampling are safe. The default data collator
turns integer ids into a tensor; string ids need a collator that keeps them as a list.

In distributed training every process records the examples it sees and writes its own shard
``dynamics/rank-<r>.parquet``; rank 0 writes ``run.json`` and ``examples.parquet``.

This module imports transformers only when a trainer class is built, so importing it never
requires transformers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from analysis import schema as S
from analysis.integrations.capture import extract_logits
from analysis.integrations.distributed import save_recorder
from analysis.recorder import DynamicsRecorder

__all__ = ["DynamicsTrainer", "DynamicsTrainerMixin", "with_dynamics"]  # noqa: F822 (lazy)

Source = Literal["forward_pass", "eval_pass"]
_SOURCES = S.RECORDING_SOURCES
_LABEL_KEYS = ("labels", "label", "label_ids")


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - exercised only without transformers
        raise ImportError(
            "The Hugging Face integration needs transformers and accelerate: "
            "`pip install 'datamap[hf]'`."
        ) from exc
    return transformers


class DynamicsTrainerMixin:
    """Mixin that adds dynamics recording to a ``transformers.Trainer`` subclass.

    Use :func:`with_dynamics` (or :data:`DynamicsTrainer`) rather than mixing it in by hand: it
    must come before the Trainer class in the bases.

    Parameters
    ----------
    *args, **kwargs
        Passed to the Trainer.
    dynamics_dir : path, optional
        Run directory written at the end of ``train()``; without it, call :meth:`save_dynamics`.
    dynamics_source : {"forward_pass", "eval_pass"}, default "forward_pass"
        Where the logits come from (see the module docstring).
    id_column : str, default "example_id"
        Dataset column holding each example's id.
    label_column : str, optional
        Batch key of the gold labels; defaults to the first of ``labels``, ``label``,
        ``label_ids`` present in the batch.
    class_names : sequence of str, optional
        Written to ``run.json``.
    examples : DataFrame, optional
        Full examples table (ids, split, payload...) for ``examples.parquet``; without it, the ids
        and labels seen in training are written.
    keep_logits : bool, default False
        Also keep the full logits per (example, epoch).
    logits_fn : callable, optional
        Picks the logits from the model output (default: ``output["logits"]`` / ``.logits`` /
        the first 2-D tensor of a tuple).

    Attributes
    ----------
    dynamics_recorder : DynamicsRecorder
    """

    def __init__(
        self,
        *args: Any,
        dynamics_dir: str | os.PathLike[str] | None = None,
        dynamics_source: Source = "forward_pass",
        id_column: str = S.EXAMPLE_ID,
        label_column: str | None = None,
        class_names: list[str] | None = None,
        examples: pd.DataFrame | None = None,
        keep_logits: bool = False,
        logits_fn: Callable[[Any], Any] = extract_logits,
        **kwargs: Any,
    ) -> None:
        if dynamics_source not in _SOURCES:
            raise ValueError(f"Expected `dynamics_source` in {_SOURCES}, got {dynamics_source!r}.")
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.dynamics_dir = Path(dynamics_dir) if dynamics_dir is not None else None
        self.dynamics_source = dynamics_source
        self.id_column = id_column
        self.label_column = label_column
        self.dynamics_class_names = class_names
        self.dynamics_examples = examples
        self.dynamics_logits_fn = logits_fn
        self.dynamics_recorder = DynamicsRecorder(keep_logits=keep_logits)
        self._dynamics_epoch = 0
        self.add_callback(_make_callback(self))  # type: ignore[attr-defined]

    # -- keep the id column through the Trainer's column pruning --------------------------------
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()  # type: ignore[misc]
        cols = self._signature_columns  # type: ignore[attr-defined]
        if cols is not None and self.id_column not in cols:
            cols.append(self.id_column)

    def _pop_ids(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
        inputs = dict(inputs)
        if self.id_column not in inputs:
            raise KeyError(
                f"Expected each batch to carry example ids under {self.id_column!r}, got keys "
                f"{sorted(inputs)}. Add an id column to the training dataset (or set `id_column`)."
            )
        return inputs, inputs.pop(self.id_column)

    def _batch_labels(self, inputs: Mapping[str, Any]) -> Any:
        keys = (self.label_column,) if self.label_column else _LABEL_KEYS
        for key in keys:
            if key in inputs:
                return inputs[key]
        raise KeyError(
            f"Expected the gold labels in the batch under one of {list(keys)}, got keys "
            f"{sorted(inputs)}. Set `label_column`."
        )

    # -- forward_pass recording ------------------------------------------------------------------
    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False,
                     **kwargs: Any) -> Any:
        record = self.dynamics_source == S.SOURCE_FORWARD_PASS and bool(model.training)
        if self.id_column not in inputs and not record:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)  # type: ignore[misc]
        inputs, ids = self._pop_ids(inputs)  # raises a clear KeyError when a training batch has no ids
        labels = self._batch_labels(inputs) if record else None
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)  # type: ignore[misc]
        if record:
            logits = self.dynamics_logits_fn(outputs)
            self.dynamics_recorder.update(ids, logits, labels, epoch=self._dynamics_epoch)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if self.id_column in inputs:
            inputs, _ = self._pop_ids(inputs)
        return super().prediction_step(model, inputs, *args, **kwargs)  # type: ignore[misc]

    # -- eval_pass recording ---------------------------------------------------------------------
    def record_eval_pass(self, epoch: int) -> None:
        """Run the model over the training set in evaluation mode and record every example.

        Uses the Trainer's evaluation data loader (no shuffling, evaluation batch size, the same
        collator and column pruning; one part per process in distributed training).
        """
        import torch

        model = self.model  # type: ignore[attr-defined]
        was_training = model.training
        loader = self.get_eval_dataloader(self.train_dataset)  # type: ignore[attr-defined]
        model.eval()
        try:
            with torch.no_grad():
                for batch in loader:
                    inputs = self._prepare_inputs(batch)  # type: ignore[attr-defined]
                    inputs, ids = self._pop_ids(inputs)
                    labels = self._batch_labels(inputs)
                    outputs = model(**inputs)
                    logits = self.dynamics_logits_fn(outputs)
                    self.dynamics_recorder.update(ids, logits, labels, epoch=epoch)
        finally:
            model.train(was_training)

    # -- output -------------------------------------------------------------------------------------
    def save_dynamics(self, run_dir: str | os.PathLike[str] | None = None) -> Path:
        """Write this process's dynamics shard (and, on rank 0, ``run.json``/examples).

        Call it on every process: without ``examples``, the ids and labels seen by all processes
        are gathered so that rank 0's ``examples.parquet`` lists them all.

        Parameters
        ----------
        run_dir : path, optional
            Defaults to ``dynamics_dir``.
        """
        target = run_dir if run_dir is not None else self.dynamics_dir
        if target is None:
            raise ValueError("Expected a `run_dir` (or `dynamics_dir` at construction), got None.")
        self.dynamics_recorder.rank = int(self.args.process_index)  # type: ignore[attr-defined]
        return save_recorder(self.dynamics_recorder, target, class_names=self.dynamics_class_names,
                             examples=self.dynamics_examples, source=self.dynamics_source)


def _make_callback(trainer: DynamicsTrainerMixin) -> Any:
    transformers = _import_transformers()

    class _DynamicsCallback(transformers.TrainerCallback):  # type: ignore[misc,name-defined]
        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # state.epoch is the float number of epochs done so far (resumes included).
            trainer._dynamics_epoch = int(math.floor((state.epoch or 0.0) + 1e-6))

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if trainer.dynamics_source == S.SOURCE_EVAL_PASS:
                trainer.record_eval_pass(trainer._dynamics_epoch)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if trainer.dynamics_dir is not None:
                trainer.save_dynamics()

    return _DynamicsCallback()


def with_dynamics(trainer_cls: type) -> type:
    """Return a subclass of ``trainer_cls`` (a ``transformers.Trainer`` subclass) that records dynamics.

    >>> from transformers import Trainer                          # doctest: +SKIP
    >>> RecordingTrainer = with_dynamics(Trainer)                 # doctest: +SKIP
    >>> trainer = RecordingTrainer(model=model, args=args, train_dataset=ds,
    ...                            dynamics_dir="runs/my-run")      # doctest: +SKIP
    """
    transformers = _import_transformers()
    if not (isinstance(trainer_cls, type) and issubclass(trainer_cls, transformers.Trainer)):
        raise TypeError(f"Expected a subclass of transformers.Trainer, got {trainer_cls!r}.")
    return type(f"Dynamics{trainer_cls.__name__}", (DynamicsTrainerMixin, trainer_cls), {})


_cache: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    # ``DynamicsTrainer`` is built on first access, so importing this module needs no transformers.
    if name == "DynamicsTrainer":
        if name not in _cache:
            _cache[name] = with_dynamics(_import_transformers().Trainer)
            _cache[name].__name__ = _cache[name].__qualname__ = "DynamicsTrainer"
            _cache[name].__module__ = __name__
        return _cache[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
