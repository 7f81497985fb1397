"""capture_split: features and logits stored row-aligned with the ids each batch carries."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from analysis import runstore  # noqa: E402
from analysis import schema as S  # noqa: E402
from analysis.integrations.capture import capture_split, extract_logits  # noqa: E402


def _model():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(5, 7)), ("act", nn.ReLU()), ("drop", nn.Dropout(0.5)), ("head", nn.Linear(7, 3)),
    ]))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(50, 5)), dtype=torch.float32)
    ids = rng.permutation(1000)[:50]
    return x, ids


def _dict_loader(x, ids, *, shuffle=True):
    items = [{S.EXAMPLE_ID: int(i), "x": x[k]} for k, i in enumerate(ids)]
    return torch.utils.data.DataLoader(items, batch_size=8, shuffle=shuffle,
                                       generator=torch.Generator().manual_seed(3))


def _expected(model, x):
    with torch.no_grad():
        h = torch.relu(model.fc1(x))
        return h.numpy(), model.head(h).numpy()


@pytest.mark.parametrize(("layer", "hook"), [("head", "input"), ("act", "output"), ("drop", "output")])
def test_features_and_logits_follow_the_ids(tmp_path, data, layer, hook):
    x, ids = data
    model = _model().train()
    res = capture_split(tmp_path, "test", model, _dict_loader(x, ids), layer=layer, hook=hook,
                        input_key="x")
    assert not np.array_equal(res.example_ids, ids)  # shuffled order...
    pos = {int(i): k for k, i in enumerate(ids)}
    order = [pos[int(i)] for i in res.example_ids]
    feats, logits = _expected(model, x[order])  # ...yet each row belongs to its id
    np.testing.assert_allclose(res.features, feats, rtol=1e-6)
    np.testing.assert_allclose(res.logits, logits, rtol=1e-5, atol=1e-6)  # dropout was off
    sid, sf = runstore.load_features(tmp_path, "test")
    lid, sl = runstore.load_logits(tmp_path, "test")
    np.testing.assert_array_equal(sid, res.example_ids)
    np.testing.assert_array_equal(lid, res.example_ids)
    np.testing.assert_allclose(sf, feats, rtol=1e-6)
    np.testing.assert_allclose(sl, logits, rtol=1e-5, atol=1e-6)
    assert model.training  # mode restored
    assert not model.head._forward_hooks and not model.act._forward_hooks  # hook removed


def test_features_fn_tuple_batches_and_ood_split(tmp_path, data):
    x, ids = data
    loader = [(x[k:k + 16], torch.as_tensor(ids[k:k + 16])) for k in range(0, 50, 16)]
    model = _model().eval()
    res = capture_split(tmp_path, "ood:far", model, loader, id_key=1,
                        features_fn=lambda m, b: torch.relu(m.fc1(b[0])))
    feats, logits = _expected(model, x)
    np.testing.assert_array_equal(res.example_ids, ids)
    np.testing.assert_allclose(res.features, feats, rtol=1e-6)
    np.testing.assert_allclose(res.logits, logits, rtol=1e-5, atol=1e-6)
    assert "ood:far" in runstore.list_array_splits(tmp_path, S.FEATURES_DIR)
    assert not model.training


def test_logits_only_without_run_dir(data):
    x, ids = data
    res = capture_split(None, "test", _model(), _dict_loader(x, ids, shuffle=False), input_key="x")
    assert res.features is None
    np.testing.assert_allclose(res.logits, _expected(_model(), x)[1], rtol=1e-5, atol=1e-6)


def test_errors(tmp_path, data):
    x, ids = data
    model = _model()
    loader = _dict_loader(x, ids)
    with pytest.raises(ValueError, match="submodule"):
        capture_split(tmp_path, "test", model, loader, layer="nope", input_key="x")
    with pytest.raises(ValueError, match="either"):
        capture_split(tmp_path, "test", model, loader, layer="head", features_fn=lambda m, b: b,
                      input_key="x")
    with pytest.raises(ValueError, match="hook"):
        capture_split(tmp_path, "test", model, loader, layer="head", hook="grad", input_key="x")
    with pytest.raises(ValueError, match="at least one batch"):
        capture_split(tmp_path, "test", model, [], input_key="x")
    with pytest.raises(KeyError, match="example ids"):
        capture_split(tmp_path, "test", model, [{"x": x[:4]}], input_key="x")

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 5)

        def forward(self, x):
            return self.lin(self.lin(x))

    with pytest.raises(ValueError, match="once per batch"):
        capture_split(tmp_path, "test", Twice(), loader, layer="lin", input_key="x")
    # duplicate ids are refused by the run store, nothing half-written
    dup = [{S.EXAMPLE_ID: torch.tensor([1, 1]), "x": x[:2]}]
    with pytest.raises(ValueError, match="unique"):
        capture_split(tmp_path / "dup", "test", model, dup, input_key="x")
    assert not (tmp_path / "dup" / S.LOGITS_DIR / "test.npy").exists()


def test_extract_logits():
    z = torch.zeros(2, 3)
    assert extract_logits(z) is z
    assert extract_logits({"loss": 1.0, "logits": z}) is z
    assert extract_logits((torch.tensor(1.0), z)) is z
    with pytest.raises(TypeError, match="logits_fn"):
        extract_logits({"loss": 1.0})
