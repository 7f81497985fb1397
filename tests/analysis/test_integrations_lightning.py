"""Lightning callback: real training on the digits, checked against the plain recorder.

As in the Hugging Face test, the model ignores an extra input column holding the example id but
logs it beside its logits; a plain :class:`DynamicsRecorder` fed those logits is the reference.
"""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")

from torch import nn  # noqa: E402

from analysis import runstore  # noqa: E402
from analysis import schema as S  # noqa: E402
from analysis.integrations import lightning as dl  # noqa: E402
from analysis.recorder import DynamicsRecorder  # noqa: E402
from tests.analysis.dynamics_asserts import assert_tables_equal  # noqa: E402

N, N_CLASSES, BATCH = 200, 10, 16


class LoggingModule(L.LightningModule):
    def __init__(self, *, return_logits: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, N_CLASSES))
        self.return_logits = return_logits
        self.calls: list[tuple[torch.Tensor, torch.Tensor, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x[:, :-1])
        self.calls.append((x[:, -1].round().long(), logits.detach().clone(), self.training))
        return logits

    def training_step(self, batch, batch_idx):
        logits = self(batch["x"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        return {"loss": loss, "logits": logits} if self.return_logits else loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=5e-3)


def _data():
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(1)
    rows = rng.choice(len(d.target), N, replace=False)
    ids = rng.permutation(N) + 500
    x = np.hstack([d.data[rows] / 16.0, ids[:, None]]).astype(np.float32)
    y = d.target[rows]
    items = [{"x": torch.as_tensor(x[i]), "label": int(y[i]), S.EXAMPLE_ID: int(ids[i])} for i in range(N)]
    return items, dict(zip(ids.tolist(), y.tolist(), strict=True))


def _trainer(epochs: int, accumulate: int):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, accumulate_grad_batches=accumulate,
                     num_sanity_val_steps=0)


def _reference(calls, labels, *, training: bool, per_epoch: int) -> DynamicsRecorder:
    ref = DynamicsRecorder(rank=0)
    mine = [c for c in calls if c[2] == training]
    assert len(mine) % per_epoch == 0
    for k, (ids, logits, _) in enumerate(mine):
        ref.update(ids, logits, np.array([labels[i] for i in ids.tolist()]), epoch=k // per_epoch)
    return ref


@pytest.mark.slow
def test_forward_pass_with_shuffling_and_accumulation(tmp_path):
    items, labels = _data()
    loader = torch.utils.data.DataLoader(items, batch_size=BATCH, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    module = LoggingModule()
    run = tmp_path / "run"
    cb = dl.DynamicsCallback(run, class_names=[str(k) for k in range(N_CLASSES)])
    trainer = _trainer(3, accumulate=2)
    trainer.callbacks.append(cb)
    trainer.fit(module, loader)

    ref = _reference(module.calls, labels, training=True, per_epoch=-(-N // BATCH))
    got = runstore.load_dynamics(run)
    assert_tables_equal(got, ref.to_table())
    t = got.to_pandas()
    assert sorted(t[S.EPOCH].unique()) == [0, 1, 2]
    for _, grp in t.groupby(S.EPOCH):
        assert sorted(grp[S.EXAMPLE_ID]) == sorted(labels)
    assert module.calls[0][0].tolist() != sorted(module.calls[0][0].tolist())
    meta = json.loads((run / S.RUN_JSON).read_text())
    assert meta["source"] == S.SOURCE_FORWARD_PASS and meta["n_epochs"] == 3


@pytest.mark.slow
def test_eval_pass(tmp_path):
    items, labels = _data()
    train = torch.utils.data.DataLoader(items, batch_size=BATCH, shuffle=True,
                                        generator=torch.Generator().manual_seed(0))
    evaluate = torch.utils.data.DataLoader(items, batch_size=50)
    module = LoggingModule(return_logits=False)
    run = tmp_path / "run"
    cb = dl.DynamicsCallback(run, source="eval_pass", input_key="x", eval_dataloader=evaluate)
    trainer = _trainer(2, accumulate=1)
    trainer.callbacks.append(cb)
    trainer.fit(module, train)
    ref = _reference(module.calls, labels, training=False, per_epoch=N // 50)
    assert_tables_equal(runstore.load_dynamics(run), ref.to_table())
    assert json.loads((run / S.RUN_JSON).read_text())["source"] == S.SOURCE_EVAL_PASS
    assert module.training


@pytest.mark.slow
def test_forward_pass_needs_logits_in_outputs(tmp_path):
    items, _ = _data()
    loader = torch.utils.data.DataLoader(items[:32], batch_size=BATCH)
    trainer = _trainer(1, accumulate=1)
    trainer.callbacks.append(dl.DynamicsCallback(tmp_path / "run"))
    with pytest.raises(ValueError, match="training_step"):
        trainer.fit(LoggingModule(return_logits=False), loader)


def test_bad_source_and_module_imports_without_lightning(monkeypatch):
    with pytest.raises(ValueError, match="source"):
        dl.DynamicsCallback(source="train")
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    mod = importlib.reload(dl)
    try:
        with pytest.raises(ImportError, match="datamap\\[lightning\\]"):
            mod.DynamicsCallback  # noqa: B018
    finally:
        monkeypatch.undo()
        importlib.reload(dl)
