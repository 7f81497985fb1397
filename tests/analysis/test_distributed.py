"""Distributed-safe recording: two CPU processes (gloo), one shard each, analysed as one run.

Each rank trains a DDP model on its part of the data and, after every epoch, records the logits of
its part of the training set (a shuffled ``DistributedSampler``, which pads the odd-sized dataset
with a repeated example). Rank 0 also stores the epoch's weights. The reference is a single
process that reloads those weights, records every example once per epoch, and is analysed the
same way: the merged two-shard run must give the same per-example metrics.
"""

from __future__ import annotations

import json
import math
import os
import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from analysis import runstore  # noqa: E402
from analysis import schema as S  # noqa: E402
from analysis.integrations.distributed import gather_labels  # noqa: E402
from analysis.pipeline import AnalyzeOptions, analyze_run  # noqa: E402
from analysis.recorder import DynamicsRecorder  # noqa: E402

N, N_CLASSES, EPOCHS, WORLD = 201, 10, 3, 2  # N odd: the sampler pads one example


def _data():
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(2)
    rows = rng.choice(len(d.target), N, replace=False)
    x = (d.data[rows] / 16.0).astype(np.float32)
    y = d.target[rows].astype(np.int64)
    ids = (rng.permutation(N) * 7 + 3).astype(np.int64)  # ids unlike positions
    return x, y, ids


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, N_CLASSES))


def _examples(y, ids):
    import pandas as pd

    return pd.DataFrame({S.EXAMPLE_ID: ids, S.SPLIT: S.TRAIN_SPLIT, S.LABEL: y})


def _worker(rank: int, port: int, run_dir: str, weights_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        x, y, ids = _data()
        ds = TensorDataset(torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(ids))
        model = DDP(_model())
        opt = torch.optim.SGD(model.parameters(), lr=0.2)
        train_sampler = DistributedSampler(ds, shuffle=True, seed=0)
        rec = DynamicsRecorder()  # rank comes from torch.distributed
        for epoch in range(EPOCHS):
            train_sampler.set_epoch(epoch)
            model.train()
            for xb, yb, _ in DataLoader(ds, batch_size=16, sampler=train_sampler):
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            eval_sampler = DistributedSampler(ds, shuffle=True, seed=100 + epoch)
            with torch.no_grad():
                for xb, yb, ib in DataLoader(ds, batch_size=32, sampler=eval_sampler):
                    rec.update(ib, model(xb), yb, epoch=epoch)
            if rank == 0:
                state = {k: v.detach().numpy() for k, v in model.module.state_dict().items()}
                np.savez(os.path.join(weights_dir, f"epoch-{epoch}.npz"), **state)
        rec.save(run_dir, class_names=[str(k) for k in range(N_CLASSES)],
                 examples=_examples(y, ids), source=S.SOURCE_EVAL_PASS)
        # string and integer ids, unequal payload sizes, one id seen by both ranks
        merged = gather_labels({f"only-on-{rank}": rank, 7: rank, **({"x" * 50: 9} if rank else {})})
        with open(os.path.join(weights_dir, f"gathered-{rank}.json"), "w") as fh:
            json.dump(sorted(merged.items(), key=str), fh)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_ranks_merge_to_the_single_process_result(tmp_path):
    import torch.multiprocessing as mp

    run, ref_run, weights = tmp_path / "run", tmp_path / "ref", tmp_path / "weights"
    weights.mkdir()
    mp.spawn(_worker, args=(_free_port(), str(run), str(weights)), nprocs=WORLD, join=True)

    shards = sorted(p.name for p in (run / S.DYNAMICS_DIR).glob("*.parquet"))
    assert shards == ["rank-0.parquet", "rank-1.parquet"]
    want = sorted({"only-on-0": 0, "only-on-1": 1, 7: 1, "x" * 50: 9}.items(), key=str)
    for r in range(WORLD):
        got = json.loads((weights / f"gathered-{r}.json").read_text())
        assert [tuple(p) for p in got] == want  # every rank holds the merge; rank 1 wins id 7
    dyn = runstore.load_dynamics(run).to_pandas()
    padded = -(-N // WORLD) * WORLD
    assert len(dyn) == EPOCHS * padded
    import pyarrow.parquet as pq

    first = [set(pq.read_table(run / S.DYNAMICS_DIR / s).to_pandas().query(f"{S.EPOCH} == 0")[S.EXAMPLE_ID])
             for s in shards]
    assert len(first[0] & first[1]) == padded - N  # only the sampler's padding repeats
    for _, grp in dyn.groupby(S.EPOCH):
        assert grp[S.EXAMPLE_ID].nunique() == N and len(grp) == padded

    # single-process reference from the same weights
    x, y, ids = _data()
    ref = DynamicsRecorder(rank=0)
    for epoch in range(EPOCHS):
        model = _model()
        state = np.load(weights / f"epoch-{epoch}.npz")
        model.load_state_dict({k: torch.as_tensor(state[k]) for k in state.files})
        model.eval()
        with torch.no_grad():
            ref.update(ids, model(torch.as_tensor(x)), y, epoch=epoch)
    ref.save(ref_run, class_names=[str(k) for k in range(N_CLASSES)], examples=_examples(y, ids),
             source=S.SOURCE_EVAL_PASS)

    opts = AnalyzeOptions(ood=False)
    with pytest.warns(UserWarning, match="more than once"):
        got = analyze_run(run, opts, write=False).set_index(S.EXAMPLE_ID)
    want = analyze_run(ref_run, opts, write=False).set_index(S.EXAMPLE_ID).loc[got.index]
    assert (got[S.N_EPOCHS_SEEN] == EPOCHS).all()
    for col in (S.CONFIDENCE, S.VARIABILITY, S.AUM, S.EL2N_MEAN, S.CORRECTNESS):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float),
                                   rtol=1e-4, atol=1e-5, err_msg=col)
    np.testing.assert_array_equal(got[S.FINAL_PRED].to_numpy(), want[S.FINAL_PRED].to_numpy())
    assert runstore.load_run_meta(run).source == S.SOURCE_EVAL_PASS
    assert runstore.load_run_meta(run).n_epochs == EPOCHS


def _run_script(cmd, env, cwd=None):
    import subprocess

    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _check_two_rank_run(run, *, want, epochs, per_rank_max, source):
    """Every example under its own id in each epoch, each rank only a part; the run analyses."""
    import warnings

    import pyarrow.parquet as pq

    shards = [pq.read_table(run / S.DYNAMICS_DIR / f"rank-{r}.parquet").to_pandas() for r in range(2)]
    for epoch in range(epochs):
        per_rank = [set(s.loc[s[S.EPOCH] == epoch, S.EXAMPLE_ID]) for s in shards]
        assert per_rank[0] | per_rank[1] == want  # every example, under its own id
        assert all(len(ids) <= per_rank_max for ids in per_rank)  # a part each, not all
    meta = runstore.load_run_meta(run)
    assert meta.source == source and meta.n_epochs == epochs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = analyze_run(run, AnalyzeOptions(ood=False), write=False)
    assert len(table) == len(want) and (table[S.N_EPOCHS_SEEN] == epochs).all()


HF_SCRIPT = '''
import sys
import torch
from sklearn.datasets import load_digits
from torch import nn
from transformers import TrainingArguments

from analysis.integrations.hf import DynamicsTrainer

N = {n}


class Digits(torch.utils.data.Dataset):
    def __init__(self):
        d = load_digits()
        self.x = torch.tensor(d.data[:N] / 16.0, dtype=torch.float32)
        self.y = torch.tensor(d.target[:N])

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {{"pixels": self.x[i], "labels": self.y[i], "example_id": 5000 + 3 * i}}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, pixels, labels=None):
        logits = self.body(pixels)
        return {{"logits": logits, "loss": nn.functional.cross_entropy(logits, labels)}}


args = TrainingArguments(
    output_dir=sys.argv[1] + "-ckpt", use_cpu=True, report_to=[], save_strategy="no",
    logging_strategy="no", disable_tqdm=True, num_train_epochs={epochs},
    per_device_train_batch_size=8, gradient_accumulation_steps=2, ddp_backend="gloo",
)
trainer = DynamicsTrainer(model=Net(), args=args, train_dataset=Digits(), dynamics_dir=sys.argv[1])
trainer.train()
assert args.world_size == 2, args.world_size
'''


@pytest.mark.slow
def test_hf_trainer_on_two_processes(tmp_path):
    pytest.importorskip("transformers")
    import sys
    from pathlib import Path

    n, epochs = 101, 2
    script = tmp_path / "hf_ddp.py"
    script.write_text(HF_SCRIPT.format(n=n, epochs=epochs))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    _run_script([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                 str(script), str(run)], env)

    assert sorted(p.name for p in (run / S.DYNAMICS_DIR).glob("*.parquet")) == [
        "rank-0.parquet", "rank-1.parquet"]
    # each rank sees its own part: half the data padded to whole batches (accelerate's
    # even_batches repeats a few examples), not the whole set
    _check_two_rank_run(run, want={5000 + 3 * i for i in range(n)}, epochs=epochs,
                        per_rank_max=math.ceil(math.ceil(n / 2) / 8) * 8, source=S.SOURCE_FORWARD_PASS)

LIGHTNING_SCRIPT = '''
import sys

import lightning.pytorch as L
import torch
from sklearn.datasets import load_digits
from torch import nn

from analysis.integrations.lightning import DynamicsCallback

N = {n}


class Digits(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        logits = self(batch["x"])
        return {{"loss": nn.functional.cross_entropy(logits, batch["label"]), "logits": logits}}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


if __name__ == "__main__":
    d = load_digits()
    items = [{{"x": torch.tensor(d.data[i] / 16.0, dtype=torch.float32), "label": int(d.target[i]),
               "example_id": 7000 + 2 * i}} for i in range(N)]
    loader = torch.utils.data.DataLoader(items, batch_size=8, shuffle=True)
    callback = DynamicsCallback(sys.argv[1], source=sys.argv[2], input_key="x")
    trainer = L.Trainer(max_epochs={epochs}, accelerator="cpu", devices=2, strategy="ddp",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback])
    trainer.fit(Digits(), loader)
'''


@pytest.mark.slow
def test_lightning_callback_on_two_processes(tmp_path):
    pytest.importorskip("lightning")
    import sys
    from pathlib import Path

    n, epochs = 101, 2
    script = tmp_path / "pl_ddp.py"
    script.write_text(LIGHTNING_SCRIPT.format(n=n, epochs=epochs))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    _run_script([sys.executable, str(script), str(run), "eval_pass"], env, cwd=tmp_path)
    _check_two_rank_run(run, want={7000 + 2 * i for i in range(n)}, epochs=epochs,
                        per_rank_max=math.ceil(n / 2), source=S.SOURCE_EVAL_PASS)
