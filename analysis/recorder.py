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

Cost per training step: for torch tensors, ``update`` checks what it can see without reading
values (types, shapes, dtypes, class count, epoch) and keeps references to the tensors; nothing
is copied or computed. Waiting batches are validated and reduced to the five numbers per example
in one vectorised pass when about 2**20 logit values (or 256 batches) are waiting and before any
output (``to_table``, ``save``, ``labels``): CPU tensors with
:func:`~analysis.dynamics.per_epoch_from_logits` (in the logits' precision, float32 as the
original code's ``torch.softmax``; in blocks of at most 8192 rows, which also does the value
checks: the offending rows are looked for only when it refuses a block), accelerator tensors on their own device with torch (they stay
on the GPU until reduced). NumPy input is checked and reduced at once, in its own precision.
Reducing a few hundred batches at once instead of each one on its own is what keeps recording
within a few percent of a small model's training step (``benchmarks/bench_recorder.py``).
"""

from __future__ import annotations

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
from analysis.schema import _py

__all__ = ["DynamicsRecorder"]

_LABEL_KEY = "_label"  # per-row gold label kept beside each chunk (not a dynamics column)
_NUMPY_FLOATS: tuple[Any, ...] = ()
_DEFER_DTYPES: tuple[frozenset[Any], frozenset[Any]] = (frozenset(), frozenset())
_COPY_HINT = "pass a copy instead, e.g. `update(ids, logits.detach().clone(), labels.clone(), epoch=...)`"


def _numpy_floats() -> tuple[Any, ...]:
    global _NUMPY_FLOATS
    if not _NUMPY_FLOATS:
        import torch

        _NUMPY_FLOATS = (torch.float32, torch.float64, torch.float16)
    return _NUMPY_FLOATS


def _defer_dtypes() -> tuple[frozenset[Any], frozenset[Any]]:
    """(logit dtypes, id and label dtypes) whose batches ``update`` may check later."""
    global _DEFER_DTYPES
    if not _DEFER_DTYPES[0]:
        import torch

        _DEFER_DTYPES = (
            frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64}),
            frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}),
        )
    return _DEFER_DTYPES


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
        # sum_{k != y} p_k^2 + (1 - p_y)^2 from the other classes' probabilities: no cancellation
        p_others = p.scatter(1, y[:, None], 0.0)
        el2n = ((p_others * p_others).sum(dim=1) + p_others.sum(dim=1) ** 2).sqrt()
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


_REDUCE_ELEMENTS = 1 << 17
"""Logit values reduced per call of `per_epoch_from_logits` at most (rows x classes, at most 8192
rows): its temporaries then stay small enough for the cache and the allocator's free lists;
a call on 32768 rows of 8 classes takes 3x longer per row than four calls on 8192."""


def _per_example_cpu(z: NDArray[Any], y: NDArray[Any]) -> dict[str, NDArray[Any]] | None:
    """:func:`per_epoch_from_logits` over blocks of rows (the same values: each row is reduced on
    its own); None when it refuses the values (labels out of range, NaN or inf)."""
    step = max(1, min(8192, _REDUCE_ELEMENTS // max(1, z.shape[1])))
    try:
        if len(y) <= step:
            return per_epoch_from_logits(z, y)  # reads, never writes, z
        parts = [per_epoch_from_logits(z[i:i + step], y[i:i + step]) for i in range(0, len(y), step)]
    except ValueError:
        return None
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _dense_order(ids: NDArray[Any], epochs: NDArray[Any]) -> NDArray[np.int64] | None:
    """The rows in (epoch, id) order by counting instead of sorting, for integer ids in a range
    not much wider than the rows seen per epoch (the usual 0..n-1); None when the ids are too
    sparse or an (epoch, id) pair repeats (the sorting path then keeps the last of each)."""
    n = len(ids)
    if n == 0:
        return None
    lo, e_lo = int(ids.min()), int(epochs.min())
    span = int(ids.max()) - lo + 1
    size = span * (int(epochs.max()) - e_lo + 1)
    if size > 4 * n + 1024:
        return None
    off = ids.astype(np.int64) - lo if ids.dtype.kind == "i" else (ids - ids.dtype.type(lo)).astype(np.int64)
    key = (epochs.astype(np.int64) - e_lo) * span + off
    slot = np.full(size, -1, dtype=np.int64)
    slot[key] = np.arange(n, dtype=np.int64)
    order = slot[slot >= 0]
    return order if len(order) == n else None


def _own_if_view(t: Any) -> Any:
    """A copy of ``t`` when it views a larger tensor (so waiting does not keep that one alive)."""
    base = t._base
    return t.clone() if base is not None and base.numel() > t.numel() else t


_TENSOR_NAMES = ("example_ids", "logits", "labels")


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

    **When input is validated.** Errors visible without reading values (wrong types, shapes or
    dtypes, a changed class count, a bad ``epoch``) are raised by ``update`` itself, for every
    input. NumPy arrays and lists are also checked for values (NaN or inf logits, labels out of
    range) and copied at once. Batches given as torch tensors (ids, logits and labels all
    tensors, on any device) are not copied: ``update`` keeps references, and their values are
    checked when the waiting batches are reduced, i.e. in a later ``update`` once 256 batches or
    about 2**20 logit values are waiting, and at the latest in ``to_table``, ``save`` or
    ``labels``. Such a ``ValueError`` names the epoch and an example id of the offending batch;
    that batch is not recorded, every other waiting batch is.

    **Do not modify tensors in place after passing them to ``update``** (a buffer reused for the
    next batch, ``logits.mul_(...)``): the recorder reads them later. Torch counts in-place
    changes, so such a modification is detected at the reduction and reported as a
    ``ValueError`` (that batch is not recorded); pass a copy (``logits.detach().clone()``)
    instead. Writes torch cannot see (through ``.numpy()`` or ``.data``, or CUDA-graph output
    memory that a later replay overwrites) are not detected: copy such tensors. Tensors created
    under ``torch.inference_mode`` carry no change counter; they are checked and copied at once.
    """

    _FLUSH_ELEMENTS = 1 << 20
    """Waiting logits (rows x classes) that trigger a batched reduction."""
    _FLUSH_BATCHES = 256
    """Waiting batches that trigger a batched reduction: bounds the tensors kept alive, and the
    reduction then reads batches still in cache (a few hundred scattered small tensors cost more
    to gather than the reduction itself once they have left it)."""

    def __init__(self, *, keep_logits: bool = False, rank: int | None = None) -> None:
        self.keep_logits = keep_logits
        self.rank = rank
        self._chunks: list[dict[str, Any]] = []
        self._n_classes: int | None = None
        # Batches wait to be reduced together: a handful of array ops per flush instead of per
        # training step. Each waits as (ids, logits, labels, epoch, rows, versions): torch tensors
        # as passed (detached), with their in-place change counters (`_version`) at `update` to
        # check at the flush, or recorder-owned copies, already validated, with versions None.
        self._pending: list[tuple[Any, Any, Any, int, int, tuple[int, int, int] | None]] = []
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

        Torch tensors are kept by reference and checked for values later (see the class notes):
        do not modify them in place afterwards.
        """
        t = type(logits)
        # Fast path, the usual training step: ids, logits and labels are torch tensors of the
        # usual kinds, none a view, with the class count of earlier batches. The same checks as
        # `_defer` (which handles every other case), inlined: the cost per step is a dozen
        # attribute reads, one `detach` and one append, no function call.
        if type(epoch) is int and epoch >= 0 and t.__module__ == "torch":
            shape = logits.shape
            if len(shape) == 2 and type(example_ids) is t and type(labels) is t:
                n, n_classes = shape
                if (
                    n_classes == self._n_classes
                    and logits.dtype in _DEFER_DTYPES[0] and example_ids.dtype in _DEFER_DTYPES[1]
                    and labels.dtype in _DEFER_DTYPES[1]
                    and example_ids.shape == (n,) and labels.shape == (n,)
                    and logits._base is None and example_ids._base is None and labels._base is None
                ):
                    try:
                        versions = (example_ids._version, logits._version, labels._version)
                    except RuntimeError:  # inference tensors: the general path checks them now
                        versions = None
                    if versions is not None:
                        pending = self._pending
                        pending.append((example_ids, logits.detach() if logits.requires_grad else logits,
                                        labels, epoch, n, versions))
                        self._pending_rows += n
                        if (self._pending_rows * n_classes >= self._FLUSH_ELEMENTS
                                or len(pending) >= self._FLUSH_BATCHES):
                            self._flush()
                        return
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"Expected `epoch` to be a non-negative int, got {epoch!r}.")
        if (
            t.__module__ == "torch"
            and type(example_ids) is t
            and type(labels) is t
            and self._defer(example_ids, logits, labels, int(epoch))
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
            import torch

            if n_classes < 2:
                raise ValueError(f"Expected at least 2 classes in `logits`, got {n_classes}.")
            z = logits.detach()
            if not bool(torch.isfinite(z).all()):
                raise ValueError(
                    f"`logits` for epoch {epoch} contain NaN or inf (diverged training?); "
                    "the batch was not recorded."
                )
            self._n_classes = n_classes
            # Checked already: wait as copies owned by the recorder (nothing to re-check).
            y_t = torch.from_numpy(y_np.astype(np.int64))
            self._pending.append((np.array(ids), z.clone(), y_t, int(epoch), len(ids), None))
            self._after_append(len(ids), n_classes)
            return
        arr = np.asarray(logits)
        vals = per_epoch_from_logits(arr, y_np.astype(np.int64))
        raw = arr.astype(np.float64) if self.keep_logits else None
        self._n_classes = n_classes
        try:
            self._flush()  # keep measurements in call order (the last one of a repeat wins)
        finally:  # this batch is fine even when an earlier, waiting one was not
            self._append_chunk(ids, np.full(len(ids), int(epoch), dtype=np.int32), y_np, vals, raw)

    def _defer(self, example_ids: Any, logits: Any, labels: Any, epoch: int) -> bool:
        """The common case in O(1): keep references to a batch of tensors, check values later.

        Only attributes are read (no values, no copies, no device synchronisation). Returns
        False (nothing recorded) whenever the general path must decide, including every input
        it would reject at once, so those errors and their messages come from one place.
        """
        floats, ints = _defer_dtypes()
        if (
            logits.ndim != 2 or example_ids.ndim != 1 or labels.ndim != 1
            or logits.dtype not in floats or example_ids.dtype not in ints or labels.dtype not in ints
        ):
            return False
        n, n_classes = logits.shape
        if (
            example_ids.shape[0] != n or labels.shape[0] != n or n_classes < 2
            or (self._n_classes is not None and n_classes != self._n_classes)
        ):
            return False
        if logits._base is not None or example_ids._base is not None or labels._base is not None:
            example_ids, logits, labels = (_own_if_view(example_ids), _own_if_view(logits),
                                           _own_if_view(labels))
        try:
            versions = (example_ids._version, logits._version, labels._version)
        except RuntimeError:  # inference tensors keep no change counter: checked and copied now
            return False
        if logits.requires_grad:  # keep no autograd graph alive (shares the change counter)
            logits = logits.detach()
        self._n_classes = n_classes
        self._pending.append((example_ids, logits, labels, epoch, n, versions))
        self._after_append(n, n_classes)
        return True

    def _after_append(self, n_rows: int, n_classes: int) -> None:
        self._pending_rows += n_rows
        if (self._pending_rows * n_classes >= self._FLUSH_ELEMENTS
                or len(self._pending) >= self._FLUSH_BATCHES):
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
        """Check the waiting batches and reduce them to per-example values, a few vectorised passes.

        Every waiting batch that passes is recorded; if some do not, they are dropped and a
        ValueError about the first of them (in call order) is raised afterwards.
        """
        if not self._pending:
            return
        pending, self._pending, self._pending_rows = self._pending, [], 0
        # Per waiting batch only a few attribute reads, in comprehensions; the rest is vectorised.
        now = [None if p[5] is None else (p[0]._version, p[1]._version, p[2]._version)
               for p in pending]
        problems: list[tuple[int, str]] = []
        if now != [p[5] for p in pending]:
            for i, p in enumerate(pending):
                v_now, v_then = now[i], p[5]
                if v_now is not None and v_then is not None and v_now != v_then:
                    name = _TENSOR_NAMES[[a != b for a, b in zip(v_now, v_then, strict=True)].index(True)]
                    problems.append((i, (
                        f"`{name}` of the batch of epoch {p[3]} was modified in place after "
                        "`update` (the recorder reads the tensors it is given when it reduces "
                        f"them, later); {_COPY_HINT}. The batch was not recorded."
                    )))
            bad = {i for i, _ in problems}
            order = [i for i in range(len(pending)) if i not in bad]
        else:
            order = list(range(len(pending)))
        # Batches on one device with one logits dtype are reduced together (in call order).
        keys = [(pending[i][1].device, pending[i][1].dtype) for i in order]
        start = 0
        for end in range(1, len(order) + 1):
            if end == len(order) or keys[end] != keys[start]:
                problems += self._reduce(pending, order[start:end])
                start = end
        if problems:
            problems.sort()
            more = len(problems) - 1
            extra = (f" {more} more waiting batch{'es' if more > 1 else ''} with problems "
                     "were not recorded either; all other batches were.") if more else ""
            raise ValueError(problems[0][1] + extra)

    def _reduce(self, pending: list[Any], index: list[int]) -> list[tuple[int, str]]:
        """Check and reduce the waiting batches ``pending[i] for i in index`` (one device, dtype).

        Returns the problems found as (position in ``pending``, message); those batches are
        left out, the others recorded.
        """
        import torch

        batches = [pending[i] for i in index]
        sizes = [b[4] for b in batches]
        z = torch.cat([b[1] for b in batches])  # a new tensor: the reduction may not write the caller's
        n_classes = z.shape[1]
        y_parts = [b[2] for b in batches]
        try:  # one device (else per batch below); integer dtypes promote
            y = torch.cat(y_parts).to(device=z.device, dtype=torch.long)
        except RuntimeError:
            y = torch.cat([p.to(device=z.device, dtype=torch.long) for p in y_parts])
        id_parts = [b[0] for b in batches]
        try:  # all tensors on one device (else per batch below)
            ids = torch.cat(id_parts).cpu().numpy()
        except (TypeError, RuntimeError):
            ids = np.concatenate([p.cpu().numpy() if _is_torch(p) else p for p in id_parts])
        epochs = np.repeat(np.array([b[3] for b in batches], dtype=np.int32), sizes)

        # Value checks over the whole chunk; rows are located only when one fails.
        on_cpu = z.device.type == "cpu"
        vals: dict[str, NDArray[Any]] | None = None
        bad_label: NDArray[np.bool_] | None = None
        bad_value: NDArray[np.bool_] | None = None
        if on_cpu:
            z_np = (z if z.dtype in _numpy_floats() else z.float()).numpy()
            y_np = y.numpy()
            # Optimistic: the reduction checks labels and finiteness itself (one pass each);
            # only when it refuses are the offending rows looked for.
            vals = _per_example_cpu(z_np, y_np)
            if vals is None:
                bad_label = (y_np < 0) | (y_np >= n_classes)
                bad_value = ~np.isfinite(z_np).all(axis=1)
                if not (bad_label.any() or bad_value.any()):  # not a value problem after all
                    per_epoch_from_logits(z_np, y_np)
        else:
            bad_label_t = (y < 0) | (y >= n_classes)
            bad_value_t = ~torch.isfinite(z).all(dim=1)
            if bool((bad_label_t | bad_value_t).any()):
                bad_label, bad_value = bad_label_t.cpu().numpy(), bad_value_t.cpu().numpy()
        problems: list[tuple[int, str]] = []
        if vals is None and (bad_label is not None or bad_value is not None):
            labels_np = y_np if on_cpu else y.cpu().numpy()
            no = np.zeros(len(ids), dtype=bool)
            bad_label = no if bad_label is None else bad_label
            bad_value = no if bad_value is None else bad_value
            batch_of_row = np.repeat(np.arange(len(batches)), sizes)
            bad_batches = np.unique(batch_of_row[bad_label | bad_value])
            for b in bad_batches.tolist():
                rows = batch_of_row == b
                epoch = batches[b][3]
                if bad_label[rows].any():
                    r = int(np.flatnonzero(rows & bad_label)[0])
                    msg = (f"Expected labels in [0, {n_classes}), got {int(labels_np[r])} "
                           f"(epoch {epoch}, example id {_py(ids[r])!r}); the batch was not recorded.")
                else:
                    r = int(np.flatnonzero(rows & bad_value)[0])
                    msg = (f"`logits` for epoch {epoch} contain NaN or inf (diverged training?), "
                           f"e.g. for example id {_py(ids[r])!r}; the batch was not recorded.")
                problems.append((index[b], msg))
            keep = ~np.isin(batch_of_row, bad_batches)
            if not keep.any():
                return problems
            ids, epochs, y = ids[keep], epochs[keep], y[torch.from_numpy(keep).to(y.device)]
            if on_cpu:
                z_np, y_np = z_np[keep], y_np[keep]
            else:
                z = z[torch.from_numpy(keep).to(z.device)]

        if on_cpu:
            if vals is None:
                vals = _per_example_cpu(z_np, y_np)
                if vals is None:  # pragma: no cover - the rows it refuses were left out above
                    per_epoch_from_logits(z_np, y_np)
                    raise AssertionError("unreachable")
            raw = z_np.astype(np.float32) if self.keep_logits else None
            self._append_chunk(ids, epochs, y_np, vals, raw)
        else:
            z = z.to(dtype=torch.float32)
            vals = _torch_per_example(z, y)
            raw = z.cpu().numpy() if self.keep_logits else None
            self._append_chunk(ids, epochs, y.cpu().numpy(), vals, raw)
        return problems

    @property
    def n_rows(self) -> int:
        """Number of (example, epoch) measurements recorded so far."""
        return sum(len(c[S.EXAMPLE_ID]) for c in self._chunks) + self._pending_rows

    @property
    def labels(self) -> dict[Any, int]:
        """Gold label of every example seen.

        Raises
        ------
        ValueError
            An example was recorded with different labels (in different epochs or batches).
        """
        frame = self._label_frame()
        return dict(zip(frame[S.EXAMPLE_ID].tolist(), frame[S.LABEL].tolist(), strict=True))

    def _label_frame(self) -> pd.DataFrame:
        """One row per example seen: ``example_id``, ``label``; refuses a label that changes."""
        self._flush()
        if not self._chunks:
            return pd.DataFrame({S.EXAMPLE_ID: [], S.LABEL: []})
        frame = pd.DataFrame({
            S.EXAMPLE_ID: np.concatenate([c[S.EXAMPLE_ID] for c in self._chunks]),
            S.LABEL: np.concatenate([c[_LABEL_KEY] for c in self._chunks]),
            S.EPOCH: np.concatenate([c[S.EPOCH] for c in self._chunks]),
        }).drop_duplicates([S.EXAMPLE_ID, S.LABEL])
        changed = frame[S.EXAMPLE_ID].duplicated(keep=False).to_numpy()
        if changed.any():
            first = frame[changed].sort_values(S.EPOCH, kind="stable")
            eid = first[S.EXAMPLE_ID].iloc[0]
            seen = first[first[S.EXAMPLE_ID] == eid]
            raise ValueError(
                f"Expected one label per example across epochs, got "
                f"{int(frame[changed][S.EXAMPLE_ID].nunique())} example(s) recorded with several "
                f"(first: example {S._py(eid)!r}, labels {seen[S.LABEL].tolist()} first seen in "
                f"epochs {seen[S.EPOCH].tolist()}). Pass each example's fixed gold label to "
                "`update` (relabel in examples.parquet or a new run, not during training)."
            )
        return frame[[S.EXAMPLE_ID, S.LABEL]].reset_index(drop=True)

    def _check_examples_labels(self, examples: pd.DataFrame) -> None:
        """Refuse an ``examples`` table whose labels differ from those given to ``update``."""
        recorded = self._label_frame()
        if S.LABEL not in examples.columns or S.EXAMPLE_ID not in examples.columns:
            return  # save_examples reports the missing column
        given = examples[[S.EXAMPLE_ID, S.LABEL]]
        if recorded[S.EXAMPLE_ID].dtype == object or given[S.EXAMPLE_ID].dtype == object:
            recorded = recorded.assign(**{S.EXAMPLE_ID: recorded[S.EXAMPLE_ID].astype(str)})
            given = given.assign(**{S.EXAMPLE_ID: given[S.EXAMPLE_ID].astype(str)})
        both = recorded.merge(given, on=S.EXAMPLE_ID, how="inner", suffixes=("_recorded", "_given"))
        theirs = pd.to_numeric(both[S.LABEL + "_given"], errors="coerce").to_numpy(np.float64)
        ours = both[S.LABEL + "_recorded"].to_numpy(np.float64)
        bad = ~np.isnan(theirs) & (theirs != ours)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"Expected the labels given to `update` to match the `label` column of `examples`, "
                f"got {int(bad.sum())} of {len(both)} examples that differ (first: example "
                f"{S._py(both[S.EXAMPLE_ID].iloc[i])!r}, recorded with {int(ours[i])}, examples say "
                f"{int(theirs[i])}). Pass the same labels to both."
            )

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
        dense = _dense_order(ids, cols[S.EPOCH]) if ids.dtype.kind in "iu" else None
        if dense is not None:
            order, n_dup = dense, 0
        elif ids.dtype != object:
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
        if examples is not None:
            self._check_examples_labels(examples)
        else:
            self._label_frame()  # refuses a label that changed between epochs
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
