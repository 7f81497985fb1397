"""Record per-example training dynamics from any training loop.

>>> rec = DynamicsRecorder()                                  # doctest: +SKIP
>>> for epoch in range(n_epochs):                            # doctest: +SKIP
...     for ids, x, y in loader:
...         logits = model(x)
...         rec.update(ids, logits.detach(), y, epoch=epoch)
>>> rec.save("runs/my-run", class_names=[...])                 # doctest: +SKIP

Only compact scalars are kept per (example, epoch): ``gold_prob``, ``margin``, ``pred``, ``loss``,
``el2n`` (and the full logits when ``keep_logits=True``). Batch order, shuffling and batch size do
not matter: ids travel with the batch.

Cost per training step: ``update`` validates the batch (shapes, label range, finite logits) and
copies ids, logits and labels into a buffer; nothing else. The buffered batches are reduced to the
five numbers per example in one vectorised pass when about 2**20 logit values are waiting and
before any output (``to_table``, ``save``, ``labels``): CPU tensors with
:func:`~analysis.dynamics.per_epoch_from_logits` (in the logits' precision, float32 as the
original code's ``torch.softmax``), accelerator tensors on their own device with torch (they stay
on the GPU until reduced). NumPy input is reduced at once, in its own precision. Reducing a few hundred batches at once instead of each one on its own is what keeps
recording within a few percent of a small model's training step
(``benchmarks/bench_recorder.py``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray

from analysis import runstore
from analysis import schema as S
from analysis.dynamics import per_epoch_from_logits

__all__ = ["DynamicsRecorder"]

_UNSIGNED = {k: np.dtype(f"u{k}") for k in (1, 2, 4, 8)}
_LABEL_KEY = "_label"  # per-row gold label kept beside each chunk (not a dynamics column)
_NUMPY_FLOATS: tuple[Any, ...] = ()


def _numpy_floats() -> tuple[Any, ...]:
    global _NUMPY_FLOATS
    if not _NUMPY_FLOATS:
        import torch

        _NUMPY_FLOATS = (torch.float32, torch.float64, torch.float16)
    return _NUMPY_FLOATS


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _ids_to_numpy(example_ids: Any) -> NDArray[Any]:
    if _is_torch(example_ids):
        example_ids = example_ids.detach().cpu().numpy()
    arr = np.asarray(example_ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"Expected `example_ids` to be 1-D, got shape {arr.shape}.")
    if arr.dtype.kind == "f":
        raise TypeError("Expected integer or string `example_ids`, got floats.")
    if arr.dtype.kind in "US":
        arr = arr.astype(object)
    return arr


def _torch_per_example(logits: Any, labels: Any) -> dict[str, NDArray[Any]]:
    import torch

    with torch.no_grad():
        z = logits.detach()
        if z.dtype in (torch.float16, torch.bfloat16):
            z = z.float()
        y = labels.to(device=z.device, dtype=torch.long)
        logp = torch.log_softmax(z, dim=-1)
        gold_logp = logp.gather(1, y[:, None])[:, 0]
        gold_z = z.gather(1, y[:, None])[:, 0]
        others = z.scatter(1, y[:, None], float("-inf"))
        margin = gold_z - others.max(dim=1).values
        p = logp.exp()
        gold_p = gold_logp.exp()
        el2n = ((p * p).sum(dim=1) - 2 * gold_p + 1).clamp_min(0).sqrt()
        pred = z.argmax(dim=1)
        stacked = torch.stack([gold_p, margin, -gold_logp, el2n]).cpu().numpy()
        pred_np = pred.cpu().numpy().astype(np.int32)
    return {
        S.GOLD_PROB: stacked[0],
        S.MARGIN: stacked[1],
        S.LOSS: stacked[2],
        S.EL2N: stacked[3],
        S.PRED: pred_np,
    }


class _CpuBuffer:
    """Growable row buffers for CPU batches waiting to be reduced (no per-batch allocation)."""

    __slots__ = ("ids", "logits", "labels", "batch_sizes", "batch_epochs", "n")

    def __init__(self, ids_dtype: Any, logits_dtype: Any, n_classes: int, capacity: int) -> None:
        self.ids: NDArray[Any] = np.empty(capacity, dtype=ids_dtype)
        self.logits: NDArray[Any] = np.empty((capacity, n_classes), dtype=logits_dtype)
        self.labels: NDArray[np.int64] = np.empty(capacity, dtype=np.int64)
        self.batch_sizes: list[int] = []
        self.batch_epochs: list[int] = []
        self.n = 0

    def epochs(self) -> NDArray[np.int32]:
        """Epoch of every buffered row."""
        return np.repeat(np.array(self.batch_epochs, dtype=np.int32), self.batch_sizes)

    def clear(self) -> None:
        self.n = 0
        self.batch_sizes, self.batch_epochs = [], []

    def fits(self, ids: NDArray[Any], logits: NDArray[Any]) -> bool:
        return (self.ids.dtype == ids.dtype and self.logits.dtype == logits.dtype
                and self.logits.shape[1] == logits.shape[1])

    def append(self, ids: NDArray[Any], logits: NDArray[Any], labels: NDArray[Any], epoch: int) -> None:
        end = self.n + len(ids)
        if end > len(self.ids):
            cap = max(2 * len(self.ids), end)
            for name in ("ids", "logits", "labels"):
                old = getattr(self, name)
                new = np.empty((cap, *old.shape[1:]), dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        self.ids[self.n:end] = ids
        self.logits[self.n:end] = logits
        self.labels[self.n:end] = labels
        self.batch_sizes.append(len(ids))
        self.batch_epochs.append(epoch)
        self.n = end


def _world_size() -> int:
    """Processes in the torch.distributed job, 1 outside one (or without torch)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return 1
    return int(dist.get_world_size()) if dist.is_available() and dist.is_initialized() else 1


class DynamicsRecorder:
    """Collect per-example dynamics batch by batch, then write them to a run directory.

    Parameters
    ----------
    keep_logits : bool, default False
        Also keep the full logits (as a list column). Useful for small class counts or for
        exporting back to the cartography jsonl format; costs ``n_classes`` floats per row.
    rank : int, optional
        Process rank in distributed training; names the shard this recorder writes
        (``dynamics/rank-<rank>.parquet``). Defaults to ``torch.distributed``'s rank when
        initialised, else 0.

    Notes
    -----
    If an example is seen twice within one epoch (a sampler that repeats examples), the later
    measurement replaces the earlier one and a warning is issued once.
    """

    _FLUSH_ELEMENTS = 1 << 20
    """Pending logits (rows x classes) that trigger a batched reduction."""

    def __init__(self, *, keep_logits: bool = False, rank: int | None = None) -> None:
        self.keep_logits = keep_logits
        self.rank = rank
        self._chunks: list[dict[str, Any]] = []
        self._n_classes: int | None = None
        # Batches wait to be reduced together: a handful of array ops per flush instead of per
        # training step. CPU batches are copied into `_buffer`; accelerator batches wait in
        # `_pending` as (ids, logits on their device, labels, epoch). Only one of the two holds
        # rows at any time, so measurements stay in call order.
        self._buffer: _CpuBuffer | None = None
        self._pending: list[tuple[NDArray[Any], Any, Any, int]] = []
        self._pending_rows = 0

    # -- recording ----------------------------------------------------------------------------
    def update(self, example_ids: Any, logits: Any, labels: Any, *, epoch: int) -> None:
        """Record one batch.

        Parameters
        ----------
        example_ids : array-like (batch,)
            Ids of the examples in the batch (ints or strings), in batch order.
        logits : torch.Tensor or ndarray (batch, n_classes)
            Raw (pre-softmax) model outputs; may live on any device.
        labels : torch.Tensor or array-like of int (batch,)
            Gold labels.
        epoch : int
            Epoch number (keyword-only, so it cannot be confused with a label).
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"Expected `epoch` to be a non-negative int, got {epoch!r}.")
        if (
            type(logits).__module__ == "torch"
            and type(example_ids) is type(logits)
            and type(labels) is type(logits)
            and self._fast_cpu_update(example_ids, logits, labels, int(epoch))
        ):
            return
        ids = _ids_to_numpy(example_ids)
        shape = tuple(logits.shape)
        if len(shape) == 1 and len(ids) == 1:
            logits = logits[None, :] if not _is_torch(logits) else logits.unsqueeze(0)
            shape = tuple(logits.shape)
        if len(shape) != 2 or shape[0] != len(ids):
            raise ValueError(
                f"Expected `logits` to have shape ({len(ids)}, n_classes), got {shape}."
            )
        n_classes = int(shape[1]) if self._n_classes is None else self._n_classes
        if shape[1] != n_classes:
            raise ValueError(
                f"Expected {n_classes} classes (as in earlier batches), got logits with {shape[1]}."
            )
        if _is_torch(labels):
            y_np = labels.detach().cpu().numpy().reshape(-1)
        else:
            y_np = np.asarray(labels).reshape(-1)
        if y_np.shape != (len(ids),):
            raise ValueError(f"Expected `labels` of shape ({len(ids)},), got {y_np.shape}.")
        if y_np.dtype.kind not in "iu":
            raise TypeError(f"Expected integer labels, got dtype {y_np.dtype}.")
        # One reduction instead of min and max: negative labels read as unsigned are huge.
        as_unsigned = y_np.view(f"u{y_np.dtype.itemsize}") if y_np.dtype.kind == "i" else y_np
        if len(y_np) and as_unsigned.max() >= n_classes:
            bad = y_np[(y_np < 0) | (y_np >= n_classes)][0]
            raise ValueError(f"Expected labels in [0, {n_classes}), got {int(bad)}.")

        if _is_torch(logits):
            if n_classes < 2:
                raise ValueError(f"Expected at least 2 classes in `logits`, got {n_classes}.")
            z = logits.detach()
            on_cpu = z.device.type == "cpu"
            if on_cpu:
                z_np = (z if z.dtype in _numpy_floats() else z.float()).numpy()
                # One reduction: a sum is finite iff every value is, barring overflow (rechecked).
                finite = bool(np.isfinite(z_np.sum(dtype=np.float64))) or bool(np.isfinite(z_np).all())
            else:
                import torch

                finite = bool(torch.isfinite(z).all())
            if not finite:
                raise ValueError(
                    f"`logits` for epoch {epoch} contain NaN or inf (diverged training?); "
                    "the batch was not recorded."
                )
            self._n_classes = n_classes
            # Copies: the caller may reuse or modify its tensors after this call. CPU batches wait
            # as NumPy arrays, accelerator batches stay on their device until the flush.
            if on_cpu:
                self._buffer_append(ids, z_np, y_np, int(epoch))
                return
            if self._buffer is not None and self._buffer.n:
                self._flush()
            y_t = labels.detach() if _is_torch(labels) else y_np.astype(np.int64)
            self._pending.append((np.array(ids), z.clone(), y_t, int(epoch)))
            self._pending_rows += len(ids)
            if self._pending_rows * n_classes >= self._FLUSH_ELEMENTS:
                self._flush()
            return
        arr = np.asarray(logits)
        vals = per_epoch_from_logits(arr, y_np.astype(np.int64))
        raw = arr.astype(np.float64) if self.keep_logits else None
        self._n_classes = n_classes
        self._flush()  # keep measurements in call order (the last one of a repeat wins)
        self._append_chunk(ids, np.full(len(ids), int(epoch), dtype=np.int32), y_np, vals, raw)

    def _fast_cpu_update(self, example_ids: Any, logits: Any, labels: Any, epoch: int) -> bool:
        """The common case in few operations: CPU tensors, integer ids and labels, float logits.

        Returns False (nothing recorded) whenever the general path must decide, including every
        input it would reject, so errors and their messages come from one place.
        """
        if not (logits.is_cpu and example_ids.is_cpu and labels.is_cpu):
            return False
        z = logits.detach().numpy() if logits.dtype in _numpy_floats() else None
        if z is None or z.ndim != 2 or example_ids.requires_grad or labels.requires_grad:
            return False
        ids = example_ids.numpy()
        y = labels.numpy()
        n, n_classes = z.shape
        if (
            ids.ndim != 1 or y.ndim != 1 or ids.shape[0] != n or y.shape[0] != n or n == 0
            or ids.dtype.kind not in "iu" or y.dtype.kind not in "iu" or n_classes < 2
            or (self._n_classes is not None and n_classes != self._n_classes)
        ):
            return False
        # Each NumPy call costs microseconds right after a training step (cold caches), so the
        # checks use as few as possible: negative labels read as unsigned are huge, and the max
        # and min of the logits are finite iff every logit is (NaN propagates through both).
        if (y.view(_UNSIGNED[y.dtype.itemsize]) if y.dtype.kind == "i" else y).max() >= n_classes:
            return False
        if not (math.isfinite(z.max()) and math.isfinite(z.min())):
            return False
        self._n_classes = n_classes
        self._buffer_append(ids, z, y, epoch)
        return True

    def _buffer_append(self, ids: NDArray[Any], logits: NDArray[Any], labels: NDArray[Any],
                       epoch: int) -> None:
        """Copy one validated CPU batch into the row buffer; reduce when it is full."""
        if self._pending:  # accelerator batches recorded earlier go first
            self._flush()
        buf = self._buffer
        if buf is not None and not buf.fits(ids, logits):
            self._flush()
            buf = None
        if buf is None:
            capacity = max(len(ids), min(8192, self._FLUSH_ELEMENTS // logits.shape[1] + 1))
            buf = self._buffer = _CpuBuffer(ids.dtype, logits.dtype, logits.shape[1], capacity)
        buf.append(ids, logits, labels, epoch)
        self._pending_rows += len(ids)
        if self._pending_rows * logits.shape[1] >= self._FLUSH_ELEMENTS:
            self._flush()

    def _append_chunk(
        self,
        ids: NDArray[Any],
        epochs: NDArray[np.int32],
        labels: NDArray[Any],
        vals: dict[str, NDArray[Any]],
        raw: NDArray[Any] | None,
    ) -> None:
        chunk = {S.EXAMPLE_ID: ids, S.EPOCH: epochs, **vals}
        if raw is not None:
            chunk[S.LOGITS] = raw
        chunk[_LABEL_KEY] = np.asarray(labels).astype(np.int64, copy=False)
        self._chunks.append(chunk)

    def _flush(self) -> None:
        """Reduce the pending batches to per-example values in one vectorised pass."""
        buf = self._buffer
        if buf is not None and buf.n:
            n, self._pending_rows = buf.n, 0
            z_np = buf.logits[:n]
            vals = per_epoch_from_logits(z_np, buf.labels[:n])  # reads, never writes, z_np
            raw = z_np.astype(np.float32) if self.keep_logits else None
            self._append_chunk(buf.ids[:n].copy(), buf.epochs(), buf.labels[:n].copy(), vals, raw)
            buf.clear()
        if not self._pending:
            return
        import torch

        pending, self._pending, self._pending_rows = self._pending, [], 0
        ids = np.concatenate([p[0] for p in pending])
        epochs = np.repeat(
            np.array([p[3] for p in pending], dtype=np.int32), [len(p[0]) for p in pending]
        )
        device = pending[0][1].device
        z = torch.cat([p[1].to(device=device, dtype=torch.float32) for p in pending])
        y = torch.cat([torch.as_tensor(p[2]).to(device=device, dtype=torch.long) for p in pending])
        vals = _torch_per_example(z, y)
        raw = z.cpu().numpy() if self.keep_logits else None
        self._append_chunk(ids, epochs, y.cpu().numpy(), vals, raw)

    @property
    def n_rows(self) -> int:
        """Number of (example, epoch) measurements recorded so far."""
        return sum(len(c[S.EXAMPLE_ID]) for c in self._chunks) + self._pending_rows

    @property
    def labels(self) -> dict[Any, int]:
        """Gold label of every example seen (last seen wins)."""
        self._flush()
        out: dict[Any, int] = {}
        for c in self._chunks:
            out.update(zip(c[S.EXAMPLE_ID].tolist(), c[_LABEL_KEY].tolist(), strict=True))
        return out

    # -- output ---------------------------------------------------------------------------------
    def to_table(self) -> pa.Table:
        """Return the long dynamics table, sorted by (epoch, example_id), one row per pair."""
        self._flush()
        if not self._chunks:
            raise ValueError("Nothing recorded: call `update` at least once before saving.")
        cols: dict[str, Any] = {}
        for name in self._chunks[0]:
            if name == _LABEL_KEY:
                continue
            parts = [c[name] for c in self._chunks]
            cols[name] = np.concatenate(parts) if name != S.LOGITS else np.concatenate(parts, axis=0)
        ids = cols[S.EXAMPLE_ID]
        if ids.dtype != object:
            # Sort once (lexsort is stable: repeats stay in call order), then keep the last row
            # of each run of equal (epoch, id) keys.
            order = np.lexsort((ids, cols[S.EPOCH]))
            s_ids, s_ep = ids[order], cols[S.EPOCH][order]
            keep = np.ones(len(order), dtype=bool)
            keep[:-1] = (s_ids[1:] != s_ids[:-1]) | (s_ep[1:] != s_ep[:-1])
            n_dup = len(order) - int(keep.sum())
            if n_dup:
                order = order[keep]
        else:
            keys = pd.MultiIndex.from_arrays([cols[S.EPOCH], ids])
            dup = keys.duplicated(keep="last")
            n_dup = int(dup.sum())
            if n_dup:
                cols = {k: v[~dup] for k, v in cols.items()}
                ids = cols[S.EXAMPLE_ID]
            order = np.lexsort((ids.astype(str), cols[S.EPOCH]))
        if n_dup:
            warnings.warn(
                f"{n_dup} examples were recorded more than once within an epoch; "
                "keeping the last measurement of each.",
                stacklevel=2,
            )
        arrays = {}
        for name, v in cols.items():
            v = v[order]
            if name == S.LOGITS:
                arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])
            elif name in (S.GOLD_PROB, S.MARGIN, S.LOSS, S.EL2N):
                arrays[name] = pa.array(v.astype(np.float32, copy=False))
            else:
                arrays[name] = pa.array(v if v.dtype != object else v.tolist())
        return pa.table(arrays)

    def _resolve_rank(self) -> int:
        if self.rank is not None:
            return int(self.rank)
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                return int(dist.get_rank())
        except ImportError:
            pass
        return 0

    def save(
        self,
        run_dir: str | os.PathLike[str],
        *,
        class_names: Sequence[str] | None = None,
        examples: pd.DataFrame | None = None,
        source: str = S.SOURCE_FORWARD_PASS,
        task: str = "",
        shard: str | None = None,
        write_meta: bool | None = None,
    ) -> Path:
        """Write this recorder's shard (and ``run.json`` / ``examples.parquet`` when needed).

        Parameters
        ----------
        class_names : sequence of str, optional
            Defaults to ``"0" .. "n_classes-1"``.
        examples : DataFrame, optional
            Full examples table (ids, split, payload...). Without it, a table with the ids and
            labels seen during recording is written (split ``train``) unless one exists.
        source : {"forward_pass", "eval_pass"}
            How the logits were obtained.
        shard : str, optional
            Shard file stem; defaults to ``rank-<rank>``.
        write_meta : bool, optional
            Write ``run.json``/``examples.parquet``; defaults to True on rank 0 only.

        Returns
        -------
        Path of the run directory.
        """
        table = self.to_table()
        rank = self._resolve_rank()
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        if write_meta is None:
            write_meta = rank == 0
        n_classes = int(self._n_classes or 0)
        names = list(class_names) if class_names is not None else [str(k) for k in range(n_classes)]
        if len(names) != n_classes:
            raise ValueError(
                f"Expected {n_classes} class names (the logits have {n_classes} columns), got {len(names)}."
            )
        if write_meta and examples is None and _world_size() > 1 and not (run / S.EXAMPLES_FILE).exists():
            warnings.warn(
                "save() without `examples` in a distributed job lists only this process's "
                "examples in examples.parquet; call analysis.integrations.distributed."
                "save_recorder(recorder, run_dir) on every rank instead (it gathers them all).",
                stacklevel=2,
            )
        if write_meta:
            epochs = np.unique(table.column(S.EPOCH).to_numpy())
            runstore.save_run_meta(
                run,
                runstore.RunMeta(class_names=names, n_epochs=len(epochs), source=source, task=task),
            )
            if examples is not None:
                runstore.save_examples(run, examples)
            elif not (run / S.EXAMPLES_FILE).exists():
                seen = self.labels
                ids = list(seen)
                ex = pd.DataFrame({S.EXAMPLE_ID: ids, S.SPLIT: S.TRAIN_SPLIT,
                                   S.LABEL: [seen[i] for i in ids]})
                ex = ex.sort_values(S.EXAMPLE_ID, kind="stable", key=lambda s: s.astype(str) if s.dtype == object else s)
                ex[S.LABEL_NAME] = [names[k] for k in ex[S.LABEL]]
                runstore.save_examples(run, ex.reset_index(drop=True))
        runstore.save_dynamics(run, table, shard=shard or f"rank-{rank}")
        return run
