"""OOD scorers: golden values, independent references, the scorer contract, degenerate input."""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.covariance import EmpiricalCovariance, LedoitWolf, ShrunkCovariance
from sklearn.neighbors import NearestNeighbors

from analysis import ood as O
from analysis import schema as S

REL = 1e-4


# ---- pytorch-ood, loaded without its package __init__ (which imports torchvision) -------------------


def load_pytorch_ood_detectors() -> types.SimpleNamespace:
    """Load pytorch-ood's Mahalanobis, EnergyBased and KNN detector modules by file path."""
    spec = importlib.util.find_spec("pytorch_ood")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pytorch-ood is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    saved = {k: v for k, v in sys.modules.items() if k == "pytorch_ood" or k.startswith("pytorch_ood.")}

    def load(name: str, path: Path, package: bool = False) -> types.ModuleType:
        s = importlib.util.spec_from_file_location(
            name, path, submodule_search_locations=[str(path.parent)] if package else None)
        assert s is not None and s.loader is not None
        mod = importlib.util.module_from_spec(s)
        sys.modules[name] = mod
        s.loader.exec_module(mod)
        return mod

    try:
        pkg = types.ModuleType("pytorch_ood")
        pkg.__path__ = [str(root)]
        sys.modules["pytorch_ood"] = pkg
        load("pytorch_ood.api", root / "api.py")
        utils = types.ModuleType("pytorch_ood.utils")  # skip utils/__init__ (transforms, hpo)
        utils.__path__ = [str(root / "utils")]
        sys.modules["pytorch_ood.utils"] = utils
        inner = load("pytorch_ood.utils.utils", root / "utils" / "utils.py")
        for k in dir(inner):
            if not k.startswith("__"):
                setattr(utils, k, getattr(inner, k))
        det = types.ModuleType("pytorch_ood.detector")
        det.__path__ = [str(root / "detector")]
        sys.modules["pytorch_ood.detector"] = det
        maha = load("pytorch_ood.detector.mahalanobis", root / "detector" / "mahalanobis.py")
        energy = load("pytorch_ood.detector.energy", root / "detector" / "energy.py")
        knn = load("pytorch_ood.detector.knn", root / "detector" / "knn.py")
        rmd = load("pytorch_ood.detector.rmd", root / "detector" / "rmd.py")
        return types.SimpleNamespace(Mahalanobis=maha.Mahalanobis, EnergyBased=energy.EnergyBased,
                                     KNN=knn.KNN, RMD=rmd.RMD)
    finally:
        for k in [k for k in sys.modules if k == "pytorch_ood" or k.startswith("pytorch_ood.")]:
            del sys.modules[k]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def pyood() -> types.SimpleNamespace:
    pytest.importorskip("torch")
    return load_pytorch_ood_detectors()


# ---- data -------------------------------------------------------------------------------------------------


def gaussian_data(n: int = 600, d: int = 8, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, (k, d))
    a = rng.normal(0, 0.4, (d, d)) + np.eye(d)  # correlated shared covariance
    y = rng.integers(0, k, n)
    x = means[y] + rng.normal(size=(n, d)) @ a
    q = rng.normal(0, 4, (50, d))
    return x, y, q, means


def class_means(x, y):
    return np.stack([x[y == c].mean(0) for c in np.unique(y)])


def reference_min_md(precision, means, q):
    return np.min([np.einsum("ij,jk,ik->i", q - m, precision, q - m) for m in means], axis=0)


# ---- logit scores ---------------------------------------------------------------------------------------


def test_logit_scores_golden_values():
    z = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    np.testing.assert_allclose(O.msp_score(z), [-0.5, -0.75])
    np.testing.assert_allclose(O.maxlogit_score(z), [-0.0, -np.log(3.0)])
    np.testing.assert_allclose(O.energy_score(z), [-np.log(2.0), -np.log(4.0)])
    np.testing.assert_allclose(O.energy_score(z, temperature=2.0),
                               [-2 * np.log(2.0), -2 * np.log(np.sqrt(3.0) + 1.0)])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_energy_matches_scipy_logsumexp(temperature, dtype):
    z = np.random.default_rng(1).normal(0, 10, (1000, 17)).astype(dtype)
    ref = -temperature * scipy.special.logsumexp(z.astype(np.float64) / temperature, axis=1)
    np.testing.assert_allclose(O.energy_score(z, temperature=temperature), ref, rtol=REL)


def test_energy_extreme_logits_are_finite():
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    np.testing.assert_allclose(O.energy_score(z), [-1e4, 1e4 - np.log(3.0)], rtol=1e-12)
    assert np.isfinite(O.msp_score(z)).all()


def test_msp_matches_scipy_softmax():
    z = np.random.default_rng(2).normal(0, 5, (500, 7))
    np.testing.assert_allclose(O.msp_score(z), -scipy.special.softmax(z, axis=1).max(1), rtol=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_energy_matches_pytorch_ood(pyood, temperature):
    import torch

    z = np.random.default_rng(3).normal(0, 4, (2000, 10)).astype(np.float32)
    theirs = pyood.EnergyBased(None, t=temperature).predict_logits(torch.from_numpy(z)).numpy()
    ours = O.energy_score(z, temperature=temperature)
    np.testing.assert_allclose(O.to_library_score(S.OOD_ENERGY, ours, library="pytorch-ood"),
                               theirs, rtol=REL)


@settings(max_examples=50, deadline=None)
@given(z=arrays(np.float64, (6, 4), elements=st.floats(-50, 50)), c=st.floats(-100, 100))
def test_msp_and_energy_under_a_constant_shift(z, c):
    np.testing.assert_allclose(O.msp_score(z + c), O.msp_score(z), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(O.energy_score(z + c), O.energy_score(z) - c, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(O.maxlogit_score(z + c), O.maxlogit_score(z) - c, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(z=arrays(np.float64, (5, 4), elements=st.floats(-30, 30)), seed=st.integers(0, 2**16))
def test_logit_scores_equivariant_to_row_and_class_permutations(z, seed):
    rng = np.random.default_rng(seed)
    rows, cls = rng.permutation(5), rng.permutation(4)
    for f in (O.msp_score, O.maxlogit_score, O.energy_score):
        np.testing.assert_allclose(f(z[rows][:, cls]), f(z)[rows], rtol=1e-12, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(z=arrays(np.float64, (4, 3), elements=st.floats(-30, 30)))
def test_msp_range(z):
    s = O.msp_score(z)
    assert np.all(s <= -1 / 3 + 1e-12) and np.all(s >= -1.0)


# ---- Mahalanobis ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mahalanobis_matches_sklearn_empirical_covariance(dtype):
    x, y, q, _ = gaussian_data()
    mu = class_means(x, y)
    est = EmpiricalCovariance(assume_centered=True).fit(x - mu[y])
    ref = np.min([est.mahalanobis(q - m) for m in mu], axis=0)
    m = O.MahalanobisScorer(dtype=dtype).fit(x, y)
    np.testing.assert_allclose(m.score(q), ref, rtol=REL)
    np.testing.assert_allclose(m.covariance_, est.covariance_, rtol=1e-10 if dtype == "float64" else 1e-5)
    np.testing.assert_allclose(m.means_, mu, rtol=1e-12)
    assert m.shrinkage_ == 0.0 and m.n_samples_fit_ == len(x)


@pytest.mark.parametrize("alpha", [0.1, 0.5])
def test_mahalanobis_shrinkage_matches_sklearn_shrunk_covariance(alpha):
    x, y, q, _ = gaussian_data(seed=4)
    mu = class_means(x, y)
    est = ShrunkCovariance(shrinkage=alpha, assume_centered=True).fit(x - mu[y])
    m = O.MahalanobisScorer(shrinkage=alpha, dtype="float64").fit(x, y)
    np.testing.assert_allclose(m.score(q), reference_min_md(est.precision_, mu, q), rtol=REL)


def test_mahalanobis_auto_shrinkage_matches_sklearn_ledoit_wolf():
    x, y, q, _ = gaussian_data(n=60, d=20, seed=5)  # few examples per dimension
    mu = class_means(x, y)
    est = LedoitWolf(assume_centered=True).fit(x - mu[y])
    m = O.MahalanobisScorer(shrinkage="auto").fit(x, y)
    assert m.shrinkage_ == pytest.approx(est.shrinkage_, rel=1e-10)
    np.testing.assert_allclose(m.score(q), reference_min_md(est.precision_, mu, q), rtol=REL)


def test_mahalanobis_matches_pytorch_ood_after_mapping(pyood):
    import torch

    x, y, q, _ = gaussian_data(n=3000, d=16, k=5, seed=6)
    ours = O.MahalanobisScorer().fit(x.astype(np.float32), y)
    det = pyood.Mahalanobis(None).fit_features(torch.from_numpy(x.astype(np.float32)),
                                               torch.from_numpy(y))
    for pts in (q, x[:200]):
        theirs = det.predict_features(torch.from_numpy(pts.astype(np.float32))).numpy()
        mapped = O.to_library_score(S.OOD_MAHALANOBIS, ours.score(pts), library="pytorch-ood",
                                    n_train=ours.n_samples_fit_)
        np.testing.assert_allclose(mapped, theirs, rtol=REL)


def test_mahalanobis_class_distances_and_score_consistency():
    x, y, q, _ = gaussian_data(seed=7)
    m = O.MahalanobisScorer().fit(x, y)
    d = m.class_sq_distances(q)
    assert d.shape == (len(q), 4)
    np.testing.assert_allclose(m.score(q), d.min(1))


def test_relative_mahalanobis_matches_direct_formula():
    x, y, q, _ = gaussian_data(seed=8)
    mu = class_means(x, y)
    p = EmpiricalCovariance(assume_centered=True).fit(x - mu[y]).precision_
    bg = EmpiricalCovariance().fit(x)
    ref = reference_min_md(p, mu, q) - bg.mahalanobis(q)
    np.testing.assert_allclose(O.RelativeMahalanobisScorer(dtype="float64").fit(x, y).score(q),
                               ref, rtol=REL, atol=1e-6 * np.abs(ref).max())


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_feature_scores_permutation_equivariant(seed):
    x, y, q, _ = gaussian_data(n=200, d=5, k=3, seed=1)
    perm = np.random.default_rng(seed).permutation(len(q))
    for scorer in (O.MahalanobisScorer(), O.RelativeMahalanobisScorer(), O.KNNScorer(k=5)):
        scorer.fit(x, y)
        # float32 scoring: rows land in other BLAS blocks, a few ulps apart (seen: 1.9e-6)
        np.testing.assert_allclose(scorer.score(q[perm]), scorer.score(q)[perm], rtol=1e-5)
    # fitting on permuted training rows gives the same model
    p2 = np.random.default_rng(seed + 1).permutation(len(x))
    a = O.MahalanobisScorer(dtype="float64").fit(x, y).score(q)
    b = O.MahalanobisScorer(dtype="float64").fit(x[p2], y[p2]).score(q)
    np.testing.assert_allclose(a, b, rtol=1e-9)


# ---- kNN -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scorer", "reduce"), [
    (O.KNNScorer, lambda d: d[:, -1]),  # the k-th distance
    (O.KNNMeanScorer, lambda d: d.mean(axis=1)),  # the mean over the k nearest
], ids=["knn", "knn_mean"])
def test_knn_scores_match_sklearn_nearest_neighbors(scorer, reduce):
    x, y, q, _ = gaussian_data(seed=9)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    nn = NearestNeighbors().fit(xn)
    knn = scorer(k=7, block_size=13).fit(x)
    np.testing.assert_allclose(knn.score(q), reduce(nn.kneighbors(qn, n_neighbors=7)[0]), rtol=REL)
    # training rows leave themselves out (sklearn's kneighbors() without X does the same)
    np.testing.assert_allclose(knn.score_fitted(x), reduce(nn.kneighbors(n_neighbors=7)[0]),
                               rtol=REL, atol=1e-5)


def test_knn_bank_sample_leaves_out_only_bank_rows():
    x, y, q, _ = gaussian_data(n=300, seed=18)
    knn = O.KNNScorer(k=5, max_train=100, random_state=1).fit(x)
    bank = knn.bank_index_
    assert len(bank) == 100 and len(np.unique(bank)) == 100
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    nn = NearestNeighbors().fit(xn[bank])
    got = knn.score_fitted(x)
    in_bank = np.zeros(300, bool)
    in_bank[bank] = True
    # bank rows: leave-one-out among the bank; the others: plain neighbours in the bank
    np.testing.assert_allclose(got[bank], nn.kneighbors(n_neighbors=5)[0][:, -1], rtol=REL, atol=1e-5)
    np.testing.assert_allclose(got[~in_bank], nn.kneighbors(xn[~in_bank], n_neighbors=5)[0][:, -1],
                               rtol=REL, atol=1e-5)
    np.testing.assert_allclose(knn.score(q), nn.kneighbors(
        q / np.linalg.norm(q, axis=1, keepdims=True), n_neighbors=5)[0][:, -1], rtol=REL)
    with pytest.raises(ValueError, match="max_train"):
        O.KNNScorer(max_train=1).fit(x)


def test_knn_matches_pytorch_ood(pyood):
    import torch

    x, y, q, _ = gaussian_data(seed=10)
    det = pyood.KNN(None, k=10).fit_features(torch.from_numpy(x), torch.from_numpy(y))
    theirs = det.predict_features(torch.from_numpy(q)).numpy()
    ours = O.KNNScorer(k=10).fit(x).score(q)
    np.testing.assert_allclose(O.to_library_score(S.OOD_KNN, ours, library="pytorch-ood"), theirs,
                               rtol=REL)


def test_knn_golden_value():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    knn = O.KNNScorer(k=2).fit(train)
    # query along (1, 1): neighbours (1,0) and (0,1) at distance sqrt(2 - sqrt 2)
    np.testing.assert_allclose(knn.score([[3.0, 3.0]]), [np.sqrt(2 - np.sqrt(2))])


# ---- the contract, for every scorer -----------------------------------------------------------------------


def contract_data():
    rng = np.random.default_rng(11)
    k, d = 4, 6
    means = rng.normal(0, 4, (k, d))
    y = rng.integers(0, k, 400)
    feats = means[y] + rng.normal(size=(400, d))
    logits = 3.0 * np.eye(k)[y] + rng.normal(0, 0.3, (400, k)) * 0 + 2.0 * np.eye(k)[y]
    near_f = means[rng.integers(0, k, 40)] + rng.normal(size=(40, d))
    far_f = -np.abs(rng.normal(0, 1, (40, d))) * 30 - 40  # far from every class, other direction
    near_z = 5.0 * np.eye(k)[rng.integers(0, k, 40)] + rng.normal(0, 0.1, (40, k))
    far_z = rng.normal(0, 0.1, (40, k))  # flat: no confident class
    return {"features": (feats, near_f, far_f), "logits": (logits, near_z, far_z)}, y


@pytest.mark.parametrize("column", list(O.SCORERS))
def test_scorer_contract(column):
    data, y = contract_data()
    cls = O.SCORERS[column]
    train, near, far = data[cls.input_kind]
    scorer = O.make_scorer(column)
    assert scorer.column == column
    # __init__ stores parameters only
    assert not [a for a in vars(scorer) if a.endswith("_")]
    with pytest.raises(S.NotFittedError, match="not fitted"):
        scorer.score(near)
    assert scorer.fit(train, y) is scorer
    assert [a for a in vars(scorer) if a.endswith("_")]
    s_near, s_far = scorer.score(near), scorer.score(far)
    assert s_near.shape == (40,) and s_near.dtype == np.float64
    assert np.isfinite(s_near).all() and np.isfinite(s_far).all()
    assert s_far.min() > np.median(s_near), column
    assert scorer.score_fitted(train).shape == (len(train),)
    with pytest.raises(ValueError, match="columns"):
        scorer.score(near[:, :-1])
    with pytest.raises(ValueError, match="finite"):
        scorer.score(np.where(np.arange(near.size).reshape(near.shape) == 3, np.nan, near))


def test_make_scorer_names():
    assert isinstance(O.make_scorer("energy", temperature=2.0), O.EnergyScorer)
    assert isinstance(O.make_scorer(S.OOD_RMD), O.RelativeMahalanobisScorer)
    with pytest.raises(ValueError, match="Expected an OOD scorer among"):
        O.make_scorer("odin")
    assert set(O.LOGIT_SCORERS) | set(O.FEATURE_SCORERS) == set(O.SCORERS)


def test_library_conventions_are_complete_and_signed():
    for lib in ("pytorch-ood", "openood"):
        for col in O.SCORERS:
            assert (lib, col) in O.LIBRARY_CONVENTIONS
    np.testing.assert_allclose(O.to_library_score(S.OOD_MSP, [-0.9], library="openood"), [0.9])
    np.testing.assert_allclose(O.to_library_score(S.OOD_KNN, [0.5], library="openood"), [-0.25])
    np.testing.assert_allclose(
        O.to_library_score(S.OOD_MAHALANOBIS, [10.0], library="pytorch-ood", n_train=5), [1.0])
    # pytorch-ood's RMD: no 1/2 factor, covariances not divided by N
    np.testing.assert_allclose(
        O.to_library_score(S.OOD_RMD, [10.0], library="pytorch-ood", n_train=5), [2.0])
    with pytest.raises(ValueError, match="n_train"):
        O.to_library_score(S.OOD_MAHALANOBIS, [1.0], library="pytorch-ood")


# ---- degenerate input -----------------------------------------------------------------------------------


def test_one_class_warns_and_rmd_is_zero():
    x, _, q, _ = gaussian_data(seed=12)
    y = np.zeros(len(x), int)
    with pytest.warns(UserWarning, match="Only one class"):
        m = O.MahalanobisScorer(dtype="float64").fit(x, y)
    np.testing.assert_allclose(m.score(q), EmpiricalCovariance().fit(x).mahalanobis(q), rtol=REL)
    with pytest.warns(UserWarning, match="Only one class"):
        r = O.RelativeMahalanobisScorer(dtype="float64").fit(x, y)
    np.testing.assert_allclose(r.score(q), 0.0, atol=1e-6 * m.score(q).max())


def test_class_with_a_single_example_warns_and_scores():
    x, y, q, _ = gaussian_data(seed=13)
    y = y.copy()
    y[0] = 9
    with pytest.warns(UserWarning, match="single training example"):
        m = O.MahalanobisScorer().fit(x, y)
    np.testing.assert_allclose(m.means_[-1], x[0])
    assert m.score(x[:1])[0] == pytest.approx(0.0, abs=1e-3)
    assert np.isfinite(m.score(q)).all()


def test_zero_variance_feature_falls_back_to_shrinkage():
    x, y, q, _ = gaussian_data(seed=14)
    x = x.copy()
    x[:, 2] = 1.5
    with pytest.warns(UserWarning, match="singular.*Ledoit-Wolf"):
        m = O.MahalanobisScorer().fit(x, y)
    assert m.shrinkage_ > 0
    assert np.isfinite(m.score(q)).all()


def test_more_features_than_rows_falls_back_to_shrinkage():
    x, y, q, _ = gaussian_data(n=30, d=64, k=3, seed=15)
    with pytest.warns(UserWarning, match="singular"):
        m = O.MahalanobisScorer().fit(x, y)
    s = m.score(q)
    assert np.isfinite(s).all() and (s >= 0).all()
    # explicit shrinkage: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        O.MahalanobisScorer(shrinkage=0.2).fit(x, y)


def test_all_constant_features_raise():
    x = np.ones((20, 3))
    with pytest.raises(ValueError, match="zero .*covariance"):
        O.MahalanobisScorer().fit(x, np.arange(20) % 2)


def test_nan_features_and_bad_shapes_raise():
    x, y, q, _ = gaussian_data(seed=16)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="Expected finite `features`, got NaN or inf in 1 of"):
        O.MahalanobisScorer().fit(bad, y)
    with pytest.raises(ValueError, match="shape \\(n_examples, n_features\\)"):
        O.KNNScorer().fit(x[0])
    with pytest.raises(ValueError, match="Expected `labels` to have shape"):
        O.MahalanobisScorer().fit(x, y[:-1])
    with pytest.raises(ValueError, match="Expected class `labels`"):
        O.MahalanobisScorer().fit(x, None)
    with pytest.raises(ValueError, match="Expected `logits` to have shape"):
        O.energy_score(np.zeros(3))
    with pytest.raises(ValueError, match="temperature"):
        O.energy_score(np.zeros((2, 3)), temperature=0.0)
    with pytest.raises(ValueError, match="shrinkage"):
        O.MahalanobisScorer(shrinkage=2.0).fit(x, y)
    m = O.MahalanobisScorer().fit(x, y)
    with pytest.raises(ValueError, match="Expected `features` with 8 columns \\(as in `fit`\\), got 7"):
        m.score(q[:, :7])


def test_knn_k_larger_than_training_set_warns():
    x = np.random.default_rng(17).normal(size=(5, 3))
    with pytest.warns(UserWarning, match="k=50 exceeds"):
        knn = O.KNNScorer(k=50).fit(x)
    assert knn.k_ == 4
    assert np.isfinite(knn.score_fitted(x)).all()
    with pytest.raises(ValueError, match="positive integer"):
        O.KNNScorer(k=0).fit(x)


# ---- relative Mahalanobis: one regularisation for both distances (regression) ------------------------


def _shrunk_reference_rmd(x, y, q, alpha):
    """RMD with both covariances shrunk by the same ``alpha`` (scikit-learn's ShrunkCovariance)."""
    mu = class_means(x, y)
    p_class = ShrunkCovariance(assume_centered=True, shrinkage=alpha).fit(x - mu[y]).precision_
    bg = ShrunkCovariance(shrinkage=alpha).fit(x)
    return reference_min_md(p_class, mu, q) - bg.mahalanobis(q)


def test_rmd_fallback_shrinks_the_background_with_the_same_coefficient():
    # A feature constant within every class but not across classes: the class covariance is
    # singular, the background one is not. Before the fix only the class covariance was shrunk,
    # so MD_k - MD_0 compared distances under different regularisation.
    x, y, q, _ = gaussian_data(n=800, d=8, k=4, seed=21)
    x = x.copy()
    x[:, 3] = y * 2.0
    with pytest.warns(UserWarning, match="singular"):
        r = O.RelativeMahalanobisScorer(dtype="float64").fit(x, y)
    assert r.shrinkage_ > 0
    np.testing.assert_allclose(r.background_covariance_,
                               ShrunkCovariance(shrinkage=r.shrinkage_).fit(x).covariance_, rtol=1e-10)
    ref = _shrunk_reference_rmd(x, y, q, r.shrinkage_)
    np.testing.assert_allclose(r.score(q), ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_rmd_auto_uses_one_ledoit_wolf_coefficient():
    x, y, q, _ = gaussian_data(n=300, d=12, k=3, seed=22)
    r = O.RelativeMahalanobisScorer(shrinkage="auto", dtype="float64").fit(x, y)
    mu = class_means(x, y)
    alpha = LedoitWolf(assume_centered=True).fit(x - mu[y]).shrinkage_  # the class coefficient
    assert r.shrinkage_ == pytest.approx(alpha)
    ref = _shrunk_reference_rmd(x, y, q, alpha)
    np.testing.assert_allclose(r.score(q), ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_rmd_both_covariances_singular_share_one_coefficient():
    # A feature constant over all rows: both covariances are singular; the class fit chooses the
    # fallback coefficient and the background uses it too (before: its own Ledoit-Wolf value).
    x, y, q, _ = gaussian_data(n=500, d=6, k=3, seed=23)
    x = x.copy()
    x[:, 0] = 1.0
    with pytest.warns(UserWarning, match="singular"):
        r = O.RelativeMahalanobisScorer(dtype="float64").fit(x, y)
    np.testing.assert_allclose(r.background_covariance_,
                               ShrunkCovariance(shrinkage=r.shrinkage_).fit(x).covariance_, rtol=1e-10)


def test_rmd_matches_pytorch_ood_divided_by_n(pyood):
    import torch

    x, y, q, _ = gaussian_data(n=3000, d=16, k=5, seed=24)
    ours = O.RelativeMahalanobisScorer(dtype="float64").fit(x, y)
    det = pyood.RMD(None).fit_features(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y))
    for pts in (q, x[:200]):
        theirs = det.predict_features(torch.from_numpy(pts.astype(np.float32))).numpy()
        mapped = O.to_library_score(S.OOD_RMD, ours.score(pts), library="pytorch-ood",
                                    n_train=ours.n_samples_fit_)
        # float32 on their side: ~1e-7 absolute cancellation error on values of order 1e-3
        np.testing.assert_allclose(mapped, theirs, rtol=1e-4, atol=1e-6)


# ---- kNN: zero-norm rows (regression) ----------------------------------------------------------------


def test_knn_zero_rows_are_at_distance_zero_from_each_other_and_one_from_the_rest():
    # by hand: after normalisation the bank is {0, 0, e1, e2}; ||0 - 0|| = 0, ||0 - e|| = 1,
    # ||e1 - e2|| = sqrt(2)
    bank = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    knn = O.KNNScorer(k=1).fit(bank)
    np.testing.assert_allclose(knn.score([[0.0, 0.0], [5.0, 0.0], [1.0, 1.0]]),
                               [0.0, 0.0, np.sqrt(2.0 - np.sqrt(2.0))], atol=1e-6)
    # leave-one-out: each zero row still has the other zero row at distance 0; e1's nearest
    # other row is a zero row (1.0 < sqrt(2))
    np.testing.assert_allclose(knn.score_fitted(bank), [0.0, 0.0, 1.0, 1.0], atol=1e-6)
    knn2 = O.KNNScorer(k=2).fit(bank)
    np.testing.assert_allclose(knn2.score([[0.0, 0.0]]), [0.0], atol=1e-6)
    np.testing.assert_allclose(knn2.score([[1.0, 0.0]]), [1.0], atol=1e-6)


def test_knn_auto_k_scales_with_the_bank():
    rng = np.random.default_rng(25)
    for n, k in ((150, 1), (1154, 6), (3000, 15), (20_000, 50)):
        assert O.KNNScorer().fit(rng.normal(size=(n, 2))).k_ == k
    # the bank, not the training set, sets it
    assert O.KNNScorer(max_train=400).fit(rng.normal(size=(5000, 2))).k_ == 2
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        O.KNNScorer(k="many").fit(rng.normal(size=(10, 2)))


# ---- kNN mean over the k nearest ----------------------------------------------------------------------


def test_knn_mean_is_made_by_name():
    assert O.make_scorer("knn_mean").column == S.OOD_KNN_MEAN


def test_knn_mean_with_zero_rows_by_hand():
    # bank after normalisation {0, 0, e1, e2}: from the zero row the 3 nearest are 0, 0, 1 -> 1/3;
    # from 5 e1: the bank row e1 (distance 0) and the two zero rows (1 each) -> 2/3
    bank = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    knn = O.KNNMeanScorer(k=3).fit(bank)
    np.testing.assert_allclose(knn.score([[0.0, 0.0], [5.0, 0.0]]), [1 / 3, 2 / 3], atol=1e-6)
    # leave-one-out for e2: the other rows are 0, 0 (distance 1 each) and e1 (sqrt 2)
    np.testing.assert_allclose(knn.score_fitted(bank)[3], (2.0 + np.sqrt(2.0)) / 3, atol=1e-6)
