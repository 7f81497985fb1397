"""Hugging Face Trainer integration: real training on the digits, checked against the plain recorder.

The test model sees one extra input column, the example id, which it ignores for prediction but
logs beside its logits. The reference is a plain :class:`DynamicsRecorder` fed exactly those
logits, so the trainer's bookkeeping (ids popped from the batch, epochs, labels, train vs
evaluation mode) is checked against what the model really produced.
"""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from torch import nn  # noqa: E402

from analysis import runstore  # noqa: E402
from analysis import schema as S  # noqa: E402
from analysis.integrations import hf  # noqa: E402
from analysis.recorder import DynamicsRecorder  # noqa: E402
from tests.analysis.dynamics_asserts import assert_tables_equal  # noqa: E402

N, N_CLASSES, BATCH, EVAL_BATCH = 200, 10, 16, 64


class LoggingNet(nn.Module):
    """A tiny MLP with dropout that logs (ids, logits, labels, training) of every forward."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, N_CLASSES))
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.net(x[:, :-1])
        self.calls.append((x[:, -1].round().long(), logits.detach().clone(), labels.clone(), self.training))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


class DigitsDataset(torch.utils.data.Dataset):
    def __init__(self, ids_offset: int = 1000) -> None:
        from sklearn.datasets import load_digits

        d = load_digits()
        rng = np.random.default_rng(0)
        rows = rng.choice(len(d.target), N, replace=False)
        self.x = torch.as_tensor(d.data[rows] / 16.0, dtype=torch.float32)
        self.y = torch.as_tensor(d.target[rows], dtype=torch.long)
        # ids deliberately unlike positions: shuffled and offset
        self.ids = torch.as_tensor(rng.permutation(N) + ids_offset, dtype=torch.long)

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = torch.cat([self.x[i], self.ids[i : i + 1].float()])
        return {"x": x, "labels": self.y[i], S.EXAMPLE_ID: self.ids[i]}


def _args(tmp_path, *, accumulation: int, remove_unused: bool, epochs: int = 3):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(tmp_path / "hf-out"), use_cpu=True, report_to=[], save_strategy="no",
        logging_strategy="no", disable_tqdm=True, per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=EVAL_BATCH, gradient_accumulation_steps=accumulation,
        num_train_epochs=epochs, learning_rate=5e-3, seed=0, dataloader_num_workers=0,
        remove_unused_columns=remove_unused,
    )


def _reference(calls, *, training: bool, per_epoch: int) -> DynamicsRecorder:
    ref = DynamicsRecorder(rank=0)
    mine = [c for c in calls if c[3] == training]
    assert len(mine) % per_epoch == 0
    for k, (ids, logits, labels, _) in enumerate(mine):
        ref.update(ids, logits, labels, epoch=k // per_epoch)
    return ref


@pytest.mark.slow
@pytest.mark.parametrize(("accumulation", "remove_unused"), [(2, True), (1, False)])
def test_forward_pass_matches_plain_recorder(tmp_path, accumulation, remove_unused):
    ds = DigitsDataset()
    model = LoggingNet()
    run = tmp_path / "run"
    trainer = hf.DynamicsTrainer(
        model=model, args=_args(tmp_path, accumulation=accumulation, remove_unused=remove_unused),
        train_dataset=ds, dynamics_dir=run, class_names=[str(k) for k in range(N_CLASSES)],
    )
    trainer.train()

    batches_per_epoch = -(-N // BATCH)
    ref = _reference(model.calls, training=True, per_epoch=batches_per_epoch)
    got = runstore.load_dynamics(run)
    assert_tables_equal(got, ref.to_table())
    # each example exactly once per epoch, under its id (not its position)
    t = got.to_pandas()
    assert sorted(t[S.EPOCH].unique()) == [0, 1, 2]
    for _, grp in t.groupby(S.EPOCH):
        assert sorted(grp[S.EXAMPLE_ID]) == sorted(ds.ids.tolist())
    first_batch = model.calls[0][0].tolist()
    assert first_batch != sorted(first_batch)  # the Trainer really shuffled
    meta = json.loads((run / S.RUN_JSON).read_text())
    assert meta["source"] == S.SOURCE_FORWARD_PASS and meta["n_epochs"] == 3
    ex = runstore.load_examples(run).set_index(S.EXAMPLE_ID)
    np.testing.assert_array_equal(ex.loc[ds.ids.numpy(), S.LABEL].to_numpy(), ds.y.numpy())


@pytest.mark.slow
def test_eval_pass_records_eval_mode_logits(tmp_path):
    ds = DigitsDataset(ids_offset=0)
    model = LoggingNet()
    run = tmp_path / "run"
    trainer = hf.DynamicsTrainer(
        model=model, args=_args(tmp_path, accumulation=2, remove_unused=True, epochs=2),
        train_dataset=ds, dynamics_dir=run, dynamics_source="eval_pass",
    )
    trainer.train()
    ref = _reference(model.calls, training=False, per_epoch=-(-N // EVAL_BATCH))
    assert_tables_equal(runstore.load_dynamics(run), ref.to_table())
    train_mode = _reference(model.calls, training=True, per_epoch=-(-N // BATCH)).to_table()
    # dropout and within-epoch updates make the training-step logits differ from the eval pass
    assert not np.allclose(train_mode.column(S.GOLD_PROB).to_numpy(),
                           ref.to_table().column(S.GOLD_PROB).to_numpy())
    assert json.loads((run / S.RUN_JSON).read_text())["source"] == S.SOURCE_EVAL_PASS
    assert model.training  # the trainer restored train mode after each pass


def test_missing_id_column_and_bad_source(tmp_path):
    with pytest.raises(ValueError, match="dynamics_source"):
        hf.DynamicsTrainer(model=LoggingNet(), args=_args(tmp_path, accumulation=1, remove_unused=False),
                           dynamics_source="logits")

    class NoIds(DigitsDataset):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            del item[S.EXAMPLE_ID]
            return item

    trainer = hf.DynamicsTrainer(model=LoggingNet(), train_dataset=NoIds(), dynamics_source="eval_pass",
                                 args=_args(tmp_path, accumulation=1, remove_unused=False))
    with pytest.raises(KeyError, match="example_id"):
        trainer.record_eval_pass(0)
    # a training step without ids must fail loudly, not train without recording
    trainer = hf.DynamicsTrainer(model=LoggingNet(), train_dataset=NoIds(),
                                 args=_args(tmp_path, accumulation=1, remove_unused=False))
    with pytest.raises(KeyError, match="example_id"):
        trainer.train()


def test_with_dynamics_rejects_non_trainer():
    with pytest.raises(TypeError, match="transformers.Trainer"):
        hf.with_dynamics(dict)


def test_module_imports_without_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    mod = importlib.reload(hf)
    try:
        assert hasattr(mod, "with_dynamics")
        with pytest.raises(ImportError, match="datamap\\[hf\\]"):
            mod.DynamicsTrainer  # noqa: B018
    finally:
        monkeypatch.undo()
        importlib.reload(hf)
