"""Saving a recorder from every process of a distributed run.

Each process writes its own dynamics shard (``dynamics/rank-<r>.parquet``); rank 0 writes
``run.json`` and ``examples.parquet``. When no examples table is given, rank 0 only knows the ids
and labels *it* saw, so :func:`save_recorder` first gathers every process's (id, label) pairs
with ``torch.distributed.all_gather`` and rank 0 writes them all. The pairs travel as UTF-8 JSON
in a uint8 tensor (ids may be integers or strings), never pickled.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import schema as S
from analysis.recorder import DynamicsRecorder

__all__ = ["gather_labels", "save_recorder"]


def _world() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group, else (0, 1)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return 0, 1


def gather_labels(labels: dict[Any, int]) -> dict[Any, int]:
    """Merge ``{example_id: label}`` over all processes (a collective: every rank must call it).

    Without an initialised process group (or with one process) returns a copy of ``labels``.
    When ranks disagree on an id's label, the highest rank wins.
    """
    rank, world = _world()
    if world == 1:
        return dict(labels)
    import torch
    import torch.distributed as dist

    payload = json.dumps([[k, int(v)] for k, v in labels.items()]).encode()
    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    size = torch.tensor([len(payload)], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = max(int(s.item()) for s in sizes)
    buf = torch.zeros(max(longest, 1), dtype=torch.uint8, device=device)
    if payload:
        buf[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    bufs = [torch.zeros_like(buf) for _ in range(world)]
    dist.all_gather(bufs, buf)
    merged: dict[Any, int] = {}
    for b, s in zip(bufs, sizes, strict=True):
        for k, v in json.loads(bytes(b[: int(s.item())].cpu().numpy()).decode()):
            merged[k] = int(v)
    return merged


def save_recorder(
    recorder: DynamicsRecorder,
    run_dir: str | os.PathLike[str],
    *,
    class_names: list[str] | None = None,
    examples: pd.DataFrame | None = None,
    source: str = S.SOURCE_FORWARD_PASS,
) -> Path:
    """Save ``recorder`` from every process: one shard each, metadata and examples from rank 0.

    Call it on every rank (it may run a collective). Without ``examples``, the ids and labels
    seen by all ranks are gathered so ``examples.parquet`` lists every recorded example (an
    existing ``examples.parquet`` is kept, as :meth:`DynamicsRecorder.save` does).

    Returns
    -------
    Path
        The run directory.
    """
    rank, world = _world()
    run = Path(run_dir)
    if examples is None and world > 1:
        seen = gather_labels(recorder.labels)
        if rank == 0 and not (run / S.EXAMPLES_FILE).exists():
            ids = sorted(seen, key=lambda i: (isinstance(i, str), i))
            examples = pd.DataFrame({S.EXAMPLE_ID: ids, S.SPLIT: S.TRAIN_SPLIT,
                                     S.LABEL: [seen[i] for i in ids]})
            if class_names is not None:
                examples[S.LABEL_NAME] = [class_names[k] for k in examples[S.LABEL]]
    recorder.rank = rank if recorder.rank is None else recorder.rank
    if recorder.n_rows == 0:
        warnings.warn(f"Process {recorder.rank} recorded nothing; it writes no dynamics shard.",
                      stacklevel=2)
        return run
    return recorder.save(run, class_names=class_names, examples=examples, source=source,
                         write_meta=recorder.rank == 0)
