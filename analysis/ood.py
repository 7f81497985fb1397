"""Out-of-distribution scores over stored features and logits.

Every score is oriented **higher = more anomalous** and named after its table column
(:mod:`analysis.schema`). For logits ``z (n_examples, n_classes)``, ``p = softmax(z)`` and
features ``x (n_examples, n_features)``:

- ``ood_msp`` = ``-max_k p_k`` (Hendrycks & Gimpel, 2017).
- ``ood_maxlogit`` = ``-max_k z_k`` (Hendrycks et al., 2022).
- ``ood_energy`` = ``-T * logsumexp(z / T)`` (Liu et al., 2020).
- ``ood_mahalanobis`` = ``min_k (x - mu_k)^T Sigma^-1 (x - mu_k)`` (Lee et al., 2018): squared,
  no 1/2 factor; ``Sigma = S / N`` with ``S`` the pooled within-class scatter and ``N`` the number
  of training rows (maximum-likelihood normaliser, as ``sklearn.covariance.EmpiricalCovariance``
  on class-centred features), optionally shrunk: ``(1 - a) Sigma + a * trace(Sigma) / D * I``.
- ``ood_rmd`` = ``min_k MD_k(x) - MD_0(x)`` (Ren et al., 2021), ``MD_0`` the squared Mahalanobis
  distance to one Gaussian fitted to all training rows.
- ``ood_knn`` = Euclidean distance from ``x / ||x||`` to its k-th nearest L2-normalised training
  feature (Sun et al., 2022); training rows leave themselves out.
- ``ood_knn_mean`` = the mean of those distances over the k nearest (as cleanlab's
  ``OutOfDistribution`` feature score averages over its neighbours).

The feature scorers follow scikit-learn's estimator contract: ``__init__`` stores parameters,
``fit`` learns attributes ending in ``_`` and returns ``self``, and scoring before ``fit`` raises
:class:`analysis.schema.NotFittedError`. Logit scorers are also plain functions
(:func:`msp_score`, :func:`maxlogit_score`, :func:`energy_score`); their classes exist so every
scorer has the same ``fit``/``score`` interface.

Conversion to the signs and scales of other libraries lives in one place:
:data:`LIBRARY_CONVENTIONS` and :func:`to_library_score`. See ``docs/ood.md``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray

from analysis import neighbors
from analysis import schema as S

log = logging.getLogger(__name__)

__all__ = [
    "msp_score",
    "maxlogit_score",
    "energy_score",
    "MSPScorer",
    "MaxLogitScorer",
    "EnergyScorer",
    "MahalanobisScorer",
    "RelativeMahalanobisScorer",
    "KNNScorer",
    "KNNMeanScorer",
    "SCORERS",
    "FEATURE_SCORERS",
    "LOGIT_SCORERS",
    "make_scorer",
    "LibraryConvention",
    "LIBRARY_CONVENTIONS",
    "to_library_score",
]

Library = Literal["pytorch-ood", "openood"]


# ---- validation -------------------------------------------------------------------------------


def _as_2d_float(x: ArrayLike, name: str, second: str) -> NDArray[np.floating[Any]]:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"Expected `{name}` to hold numbers, got dtype {arr.dtype}.")
    if arr.ndim != 2:
        raise ValueError(f"Expected `{name}` to have shape (n_examples, {second}), got {arr.shape}.")
    if arr.shape[1] == 0:
        raise ValueError(f"Expected `{name}` to have at least one column, got shape {arr.shape}.")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if arr.size and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(
            f"Expected finite `{name}`, got NaN or inf in {bad} of {arr.shape[0]} rows. "
            "Drop or impute those rows before scoring."
        )
    return arr


def _check_logits(logits: ArrayLike) -> NDArray[np.floating[Any]]:
    return _as_2d_float(logits, "logits", "n_classes")


# ---- logit scores (plain functions) -------------------------------------------------------------


def msp_score(logits: ArrayLike) -> NDArray[np.float64]:
    """Negative maximum softmax probability, ``-max_k softmax(z)_k``.

    Parameters
    ----------
    logits : array-like, shape (n_examples, n_classes)

    Returns
    -------
    ndarray of float64, shape (n_examples,)
        In ``[-1, -1/n_classes]``; higher = more anomalous.

    Examples
    --------
    >>> msp_score([[0.0, 0.0]])
    array([-0.5])
    """
    return _msp(_check_logits(logits))


def _msp(z: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    # max softmax = 1 / sum_k exp(z_k - max z)
    m = z.max(axis=1, keepdims=True)
    return -1.0 / np.exp(z - m).sum(axis=1, dtype=np.float64)


def maxlogit_score(logits: ArrayLike) -> NDArray[np.float64]:
    """Negative maximum logit, ``-max_k z_k``.

    Parameters
    ----------
    logits : array-like, shape (n_examples, n_classes)

    Returns
    -------
    ndarray of float64, shape (n_examples,)

    Examples
    --------
    >>> maxlogit_score([[1.0, 3.0]])
    array([-3.])
    """
    return -_check_logits(logits).max(axis=1).astype(np.float64)


def energy_score(logits: ArrayLike, *, temperature: float = 1.0) -> NDArray[np.float64]:
    """Free energy ``-T * logsumexp(z / T)`` (Liu et al., 2020).

    Parameters
    ----------
    logits : array-like, shape (n_examples, n_classes)
    temperature : float, default 1.0
        ``T > 0``.

    Returns
    -------
    ndarray of float64, shape (n_examples,)
        Higher (less negative) = more anomalous. Computed in the input's float precision with the
        max-shift, returned as float64.

    Examples
    --------
    >>> energy_score([[0.0, 0.0]]).round(4)
    array([-0.6931])
    """
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"Expected `temperature` > 0, got {temperature!r}.")
    return _energy(_check_logits(logits), float(temperature))


def _energy(z: NDArray[np.floating[Any]], t: float, block: int = 65_536) -> NDArray[np.float64]:
    out = np.empty(z.shape[0], dtype=np.float64)
    dtype = z.dtype.type
    for s in range(0, z.shape[0], block):  # blocks keep the temporaries in cache
        zb = z[s : s + block]
        if t != 1.0:
            zb = zb * dtype(1.0 / t)
        m = zb.max(axis=1)
        e = np.exp(zb - m[:, None])
        out[s : s + block] = -t * (m + np.log(e.sum(axis=1)))
    return out


# ---- scorer classes ---------------------------------------------------------------------------------


class _Scorer:
    """Common machinery: ``fit`` on training rows, ``score`` any rows."""

    column: ClassVar[str]
    input_kind: ClassVar[Literal["features", "logits"]]
    needs_labels: ClassVar[bool] = False
    n_features_in_: int

    def fit(self, x: ArrayLike, labels: ArrayLike | None = None) -> _Scorer:
        """Learn from the training split; returns ``self``."""
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise S.NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call `fit` with the "
                "training split first."
            )

    def _check_input(self, x: ArrayLike) -> NDArray[np.floating[Any]]:
        name = self.input_kind
        arr = _as_2d_float(x, name, "n_classes" if name == "logits" else "n_features")
        if arr.shape[1] != self.n_features_in_:
            raise ValueError(
                f"Expected `{name}` with {self.n_features_in_} columns (as in `fit`), got "
                f"{arr.shape[1]}."
            )
        return arr

    def score(self, x: ArrayLike) -> NDArray[np.float64]:
        """Score rows; higher = more anomalous.

        Parameters
        ----------
        x : array-like, shape (n_examples, n_features) or (n_examples, n_classes)
            Features or logits, as :attr:`input_kind` says.

        Returns
        -------
        ndarray of float64, shape (n_examples,)

        Raises
        ------
        NotFittedError
            Before ``fit``.
        """
        self._check_fitted()
        return self._score(self._check_input(x))

    def score_fitted(self, x: ArrayLike) -> NDArray[np.float64]:
        """Score the rows ``fit`` saw, in the same order (leave-one-out where that matters).

        Same as :meth:`score` except for :class:`KNNScorer`, where each training row leaves
        itself out of its neighbours.
        """
        return self.score(x)

    def _score(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        """Parameters given to ``__init__``."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


class _LogitScorer(_Scorer):
    input_kind = "logits"

    def fit(self, logits: ArrayLike, labels: ArrayLike | None = None) -> _LogitScorer:  # type: ignore[override]
        """Record the number of classes (logit scorers learn nothing else).

        Parameters
        ----------
        logits : array-like, shape (n_examples, n_classes)
        labels : ignored

        Returns
        -------
        self
        """
        arr = _check_logits(logits)
        self.n_features_in_ = int(arr.shape[1])
        return self


class MSPScorer(_LogitScorer):
    """:func:`msp_score` with the scorer interface (column ``ood_msp``)."""

    column = S.OOD_MSP

    def _score(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        return _msp(x)


class MaxLogitScorer(_LogitScorer):
    """:func:`maxlogit_score` with the scorer interface (column ``ood_maxlogit``)."""

    column = S.OOD_MAXLOGIT

    def _score(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        return -x.max(axis=1).astype(np.float64)


class EnergyScorer(_LogitScorer):
    """:func:`energy_score` with the scorer interface (column ``ood_energy``).

    Parameters
    ----------
    temperature : float, default 1.0
    """

    column = S.OOD_ENERGY

    def __init__(self, *, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def fit(self, logits: ArrayLike, labels: ArrayLike | None = None) -> EnergyScorer:  # type: ignore[override]
        """Check the temperature and record the number of classes; returns ``self``."""
        if not np.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"Expected `temperature` > 0, got {self.temperature!r}.")
        super().fit(logits)
        return self

    def _score(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        return _energy(x, float(self.temperature))


# ---- Gaussian (Mahalanobis) scorers --------------------------------------------------------------------


def _check_labels(labels: ArrayLike | None, n: int) -> NDArray[np.int64]:
    if labels is None:
        raise ValueError("Expected class `labels` for the training features, got None.")
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise ValueError(f"Expected `labels` to have shape ({n},), got {lab.shape}.")
    if lab.dtype.kind == "f":
        if not np.isfinite(lab).all() or not (lab == np.round(lab)).all():
            raise ValueError("Expected integer class `labels`, got missing or fractional values.")
    elif lab.dtype.kind not in "iub":
        raise TypeError(f"Expected integer class `labels`, got dtype {lab.dtype}.")
    return lab.astype(np.int64)


def _shrink(cov: NDArray[np.float64], alpha: float) -> NDArray[np.float64]:
    """``(1 - alpha) * cov + alpha * trace(cov) / D * I`` (scikit-learn's ``shrunk_covariance``)."""
    d = cov.shape[0]
    out = (1.0 - alpha) * cov
    out.flat[:: d + 1] += alpha * np.trace(cov) / d
    return out


def _ledoit_wolf_alpha(centred: NDArray[np.floating[Any]]) -> float:
    from sklearn.covariance import ledoit_wolf_shrinkage

    return float(ledoit_wolf_shrinkage(np.asarray(centred, dtype=np.float64), assume_centered=True))


@dataclass(frozen=True)
class _Gaussian:
    """A shared-covariance Gaussian: means ``(n_means, D)``, Cholesky factor ``L`` of the covariance."""

    centre: NDArray[np.floating[Any]]  # (D,) subtracted before solving, for accuracy
    means_white: NDArray[np.floating[Any]]  # (D, n_means) = L^-1 (mu_k - centre)
    means_sq: NDArray[np.floating[Any]]  # (n_means,) = ||L^-1 (mu_k - centre)||^2
    chol: NDArray[np.floating[Any]]  # (D, D) lower triangular

    def sq_distances(self, x: NDArray[np.floating[Any]], block: int = 32_768) -> NDArray[np.float64]:
        """Squared Mahalanobis distances ``(n, n_means)`` via one triangular solve per block."""
        n = x.shape[0]
        out = np.empty((n, self.means_white.shape[1]), dtype=np.float64)
        dt = self.chol.dtype
        for s in range(0, n, block):
            xb = np.asarray(x[s : s + block], dtype=dt) - self.centre
            y = scipy.linalg.solve_triangular(
                self.chol, xb.T, lower=True, check_finite=False, overwrite_b=True
            )  # (D, b)
            y_sq = np.einsum("ij,ij->j", y, y)
            d = y_sq[:, None] - 2.0 * (y.T @ self.means_white) + self.means_sq[None, :]
            out[s : s + block] = np.maximum(d, 0.0)
        return out


def _positive_definite_cholesky(cov: NDArray[np.float64]) -> NDArray[np.floating[Any]] | None:
    """The Cholesky factor of ``cov``, or None when it is not numerically positive definite.

    "Numerically" means the smallest diagonal entry of the factor is above ``1e-6`` times the
    largest (a condition number of the covariance below about ``1e12``).
    """
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return None
    dl = np.diag(chol)
    if not np.isfinite(chol).all() or dl.min() <= 1e-6 * dl.max():
        return None
    return chol


def _gaussian(means: NDArray[np.float64], chol: NDArray[np.floating[Any]],
              dtype: type[np.floating[Any]]) -> _Gaussian:
    centre = means.mean(axis=0)
    mw = scipy.linalg.solve_triangular(chol, (means - centre).T, lower=True).astype(dtype)
    return _Gaussian(
        centre=centre.astype(dtype),
        means_white=mw,
        means_sq=np.einsum("ij,ij->j", mw, mw),
        chol=chol.astype(dtype),
    )


def _fit_gaussian(
    means: NDArray[np.float64],
    scatter: NDArray[np.float64],
    n: int,
    shrinkage: float | Literal["auto"] | None,
    lw_alpha: Callable[[], float],
    dtype: type[np.floating[Any]],
    what: str,
) -> tuple[_Gaussian, NDArray[np.float64], float]:
    cov = scatter / n
    alpha = 0.0
    if shrinkage == "auto":
        alpha = lw_alpha()
    elif shrinkage is not None:
        alpha = float(shrinkage)
    if alpha:
        cov = _shrink(cov, alpha)
    chol = _positive_definite_cholesky(cov)
    if chol is None:
        if shrinkage is not None and alpha > 0 and np.trace(cov) > 0:
            raise ValueError(
                f"The {what} covariance is singular even with shrinkage {alpha:.3g}. Expected "
                "features with some variance."
            )
        if np.trace(cov) <= 0:
            raise ValueError(
                f"Expected training features with some variance, got a zero {what} covariance "
                "(every feature is constant within its class)."
            )
        alpha = max(lw_alpha(), 1e-3)
        warnings.warn(
            f"The {what} covariance of {n} rows x {cov.shape[0]} features is singular or "
            "ill-conditioned (its Cholesky factor has a diagonal entry below 1e-6 of the largest: "
            "more features than rows, constant or collinear features, or features whose scales "
            f"differ by more than about 1e6); using Ledoit-Wolf shrinkage {alpha:.3g}. Pass "
            "`shrinkage=` to choose it yourself.",
            stacklevel=3,
        )
        cov = _shrink(scatter / n, alpha)
        chol = np.linalg.cholesky(cov)
    return _gaussian(means, np.asarray(chol), dtype), cov, alpha


class MahalanobisScorer(_Scorer):
    """Class-conditional Gaussians with a shared covariance (Lee et al., 2018).

    Score: ``min_k (x - mu_k)^T Sigma^-1 (x - mu_k)`` (squared distance, no 1/2 factor).
    ``Sigma`` is the pooled within-class scatter divided by ``N`` (the number of training rows;
    the maximum-likelihood normaliser, as scikit-learn's ``EmpiricalCovariance`` on class-centred
    features), optionally shrunk toward ``trace(Sigma) / D * I``.

    Parameters
    ----------
    shrinkage : float in [0, 1], "auto" or None, default None
        ``None``: no shrinkage, unless the covariance is singular (``D >= N``, constant
        features); then Ledoit-Wolf shrinkage is used with a warning. ``"auto"``: always the
        Ledoit-Wolf coefficient. A float: ``(1 - a) Sigma + a * trace(Sigma) / D * I``.
    dtype : {"float32", "float64"}, default "float32"
        Precision of the scoring solve (the covariance and its Cholesky factor are always
        computed in float64). float32 is ~2x faster and agrees with float64 to ~1e-5 relative.

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    means_ : ndarray, shape (n_classes, n_features)
    covariance_ : ndarray, shape (n_features, n_features)
        After shrinkage.
    shrinkage_ : float
        The coefficient actually used (0 when none).
    n_features_in_ : int
    n_samples_fit_ : int
        ``N``, for converting to libraries whose covariance is not normalised.

    Examples
    --------
    >>> cross = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])  # covariance I/2
    >>> x = np.concatenate([cross, cross + [10.0, 0.0]])
    >>> MahalanobisScorer().fit(x, [0, 0, 0, 0, 1, 1, 1, 1]).score([[1.0, 1.0]]).round(3)
    array([4.])
    """

    column = S.OOD_MAHALANOBIS
    input_kind = "features"
    needs_labels = True

    def __init__(
        self,
        *,
        shrinkage: float | Literal["auto"] | None = None,
        dtype: Literal["float32", "float64"] = "float32",
    ) -> None:
        self.shrinkage = shrinkage
        self.dtype = dtype

    def _check_params(self) -> type[np.floating[Any]]:
        s = self.shrinkage
        if not (s is None or s == "auto" or (isinstance(s, (int, float)) and 0.0 <= s <= 1.0)):
            raise ValueError(f"Expected `shrinkage` None, 'auto' or a float in [0, 1], got {s!r}.")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"Expected `dtype` 'float32' or 'float64', got {self.dtype!r}.")
        return np.float32 if self.dtype == "float32" else np.float64

    def _class_stats(
        self, features: ArrayLike, labels: ArrayLike | None
    ) -> tuple[NDArray[np.floating[Any]], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
        x = _as_2d_float(features, "features", "n_features")
        n, d = x.shape
        lab = _check_labels(labels, n)
        classes, inv, counts = np.unique(lab, return_inverse=True, return_counts=True)
        if len(classes) < 1 or n < 2:
            raise ValueError(f"Expected at least 2 training rows, got {n}.")
        if len(classes) == 1:
            warnings.warn(
                "Only one class in the training labels: the Mahalanobis score is the distance to "
                "a single Gaussian (relative Mahalanobis is then 0 everywhere).",
                stacklevel=3,
            )
        if counts.min() == 1:
            warnings.warn(
                f"{int((counts == 1).sum())} class(es) have a single training example; their mean "
                "is that example and they add nothing to the shared covariance.",
                stacklevel=3,
            )
        sums = np.zeros((len(classes), d), dtype=np.float64)
        _grouped_sum(sums, inv, x)
        means = sums / counts[:, None]
        self.classes_ = classes
        self.class_counts_ = counts
        return x, inv, means, counts.astype(np.float64)

    def fit(self, features: ArrayLike, labels: ArrayLike | None = None) -> MahalanobisScorer:  # type: ignore[override]
        """Fit class means and the shared covariance on training features.

        Parameters
        ----------
        features : array-like, shape (n_examples, n_features)
        labels : array-like of int, shape (n_examples,)

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Non-finite features, fewer than 2 rows, a zero covariance, bad shapes.
        """
        dtype = self._check_params()
        x, inv, means, _ = self._class_stats(features, labels)
        n = x.shape[0]
        scatter = _within_scatter(x, inv, means, dtype)
        g, cov, alpha = _fit_gaussian(
            means, scatter, n, self.shrinkage,
            lambda: _ledoit_wolf_alpha(np.asarray(x, dtype=np.float64) - means[inv]), dtype,
            "shared within-class",
        )
        self.means_ = means
        self.covariance_ = cov
        self.shrinkage_ = alpha
        self._gauss_ = g
        self.n_samples_fit_ = n
        self.n_features_in_ = int(x.shape[1])
        return self

    def class_sq_distances(self, features: ArrayLike) -> NDArray[np.float64]:
        """Squared Mahalanobis distance to every class mean, shape (n_examples, n_classes)."""
        self._check_fitted()
        return self._gauss_.sq_distances(self._check_input(features))

    def _score(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        return np.asarray(self._gauss_.sq_distances(x).min(axis=1))


def _grouped_sum(sums: NDArray[np.float64], inv: NDArray[np.int64], x: NDArray[np.floating[Any]]) -> None:
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(sums.shape[0] + 1))
    for k in range(sums.shape[0]):
        sums[k] = x[order[bounds[k] : bounds[k + 1]]].sum(axis=0, dtype=np.float64)


def _within_scatter(
    x: NDArray[np.floating[Any]], inv: NDArray[np.int64], means: NDArray[np.float64],
    dtype: type[np.floating[Any]], block: int = 16_384,
) -> NDArray[np.float64]:
    """``sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T`` accumulated blockwise (float64 sum of blocks)."""
    d = x.shape[1]
    scatter = np.zeros((d, d), dtype=np.float64)
    mu = means.astype(dtype)
    for s in range(0, x.shape[0], block):
        xc = np.array(x[s : s + block], dtype=dtype, order="C")
        xc -= mu[inv[s : s + block]]
        scatter += xc.T @ xc  # numpy dispatches A.T @ A to BLAS (float32 products, float64 sum)
    return scatter


class RelativeMahalanobisScorer(MahalanobisScorer):
    """Relative Mahalanobis distance (Ren et al., 2021, "A Simple Fix to Mahalanobis Distance").

    Score: ``min_k MD_k(x) - MD_0(x)``, where ``MD_k`` is the squared class-conditional
    distance of :class:`MahalanobisScorer` and ``MD_0`` the squared distance to one Gaussian
    fitted to all training features (mean of all rows, covariance normalised by ``N``, the
    same shrinkage coefficient as the class covariance, so that the two distances are measured
    under one regularisation). Can be negative.

    Attributes
    ----------
    background_mean_ : ndarray, shape (n_features,)
    background_covariance_ : ndarray, shape (n_features, n_features)
    """

    column = S.OOD_RMD

    def fit(self, features: ArrayLike, labels: ArrayLike | None = None) -> RelativeMahalanobisScorer:  # type: ignore[override]
        """Fit the class-conditional and the background Gaussian; returns ``self``."""
        super().fit(features, labels)
        dtype = self._check_params()
        x = _as_2d_float(features, "features", "n_features")
        mean0 = x.mean(axis=0, dtype=np.float64)
        zeros = np.zeros(x.shape[0], dtype=np.int64)
        scatter0 = _within_scatter(x, zeros, mean0[None, :], dtype)
        return self._fit_background_from_stats(
            mean0, scatter0, x.shape[0], lambda: _ledoit_wolf_alpha(np.asarray(x, dtype=np.float64) - mean0), dtype,
        )

    def _fit_background_from_stats(
        self, mean0: NDArray[np.float64], scatter0: NDArray[np.float64], n: int,
        lw_alpha: Callable[[], float], dtype: type[np.floating[Any]],
    ) -> RelativeMahalanobisScorer:
        """The background Gaussian, under the same shrinkage coefficient as the class Gaussian.

        ``MD_k - MD_0`` compares two distances; they are only comparable under one regularisation.
        The class fit has already chosen ``shrinkage_`` (0, a given float, Ledoit-Wolf for
        ``"auto"``, or the singular-case fallback); the background uses that coefficient. When the
        background covariance alone needs the fallback (``shrinkage=None``, class covariance
        fine), the class covariance is refitted with the background's coefficient.
        """
        alpha = float(self.shrinkage_)
        shrink: float | None = alpha if (alpha > 0 or self.shrinkage is not None) else None
        g0, cov0, alpha0 = _fit_gaussian(mean0[None, :], scatter0, n, shrink, lw_alpha, dtype,
                                         "background")
        if alpha0 != alpha:  # only when alpha == 0 and the background needed the fallback
            cov = _shrink(self.covariance_, alpha0)
            self.covariance_ = cov
            self.shrinkage_ = alpha0
            self._gauss_ = _gaussian(self.means_, np.linalg.cholesky(cov), dtype)
        self.background_mean_ = mean0
        self.background_covariance_ = cov0
        self._gauss0_ = g0
        return self

    def _score(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        md = self._gauss_.sq_distances(x).min(axis=1)
        md0 = self._gauss0_.sq_distances(x)[:, 0]
        return np.asarray(md - md0)


# ---- kNN -------------------------------------------------------------------------------------------------


def _l2_normalise(x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    x32 = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x32, axis=1, keepdims=True)
    return x32 / np.maximum(norms, np.float32(1e-12))


def auto_k(n_bank: int) -> int:
    """kNN's default k for a neighbour bank of ``n_bank`` rows: ``clip(round(n_bank / 200), 1, 50)``.

    Examples
    --------
    >>> auto_k(1154), auto_k(100), auto_k(50_000)
    (6, 1, 50)
    """
    return int(min(50, max(1, round(n_bank / 200))))


class KNNScorer(_Scorer):
    """Distance to the k-th nearest training feature after L2 normalisation (Sun et al., 2022).

    Score: ``||x/||x|| - t_(k)/||t_(k)|| ||_2`` with ``t_(k)`` the k-th nearest training row
    (Euclidean, not squared). An all-zero row stays the zero vector: it is at distance 0 from
    other zero rows and 1 from every other row. Computed by blocked float32 matrix products
    (``||a - b||^2 = 2 - 2 a.b`` for unit vectors): cost ``O(n_query * n_train * D)``; above
    ``neighbors.EXACT_MAX_REFERENCE`` bank rows a clustered search (``index_``), linear in n.

    Parameters
    ----------
    k : int or "auto", default "auto"
        ``"auto"``: ``clip(round(n_bank / 200), 1, 50)`` — 0.5 % of the neighbour bank, at most
        Sun et al.'s CIFAR value 50 (a fixed 50 was the weakest feature score on a 1,154-row
        run; k 5-10 was best there: ``benchmarks/suite.py``). An int is clipped to the bank
        size minus one (so :meth:`score_fitted` can leave a row out), with a warning.
    block_size : int, default 1024
        Query rows per matrix product (memory ``block_size * n_bank * 4`` bytes).
    max_train : int or None, default None
        Keep at most this many training rows as the neighbour bank (a uniform random sample,
        as Sun et al. do on ImageNet), so scoring stays linear in the number of rows. None: all.
    random_state : int, default 0
        Seed of that sample.

    Attributes
    ----------
    train_ : ndarray of float32, shape (n_bank, n_features)
        L2-normalised training features (the bank).
    bank_index_ : ndarray of int, shape (n_bank,)
        Rows of the ``fit`` input that form the bank.
    k_ : int
        The k actually used.
    index_ : analysis.neighbors.NeighborIndex
        The neighbour search over the bank: exact up to ``neighbors.EXACT_MAX_REFERENCE`` rows,
        an inverted-file (clustered) search above (set ``search = "exact"`` on the scorer before
        ``fit`` to force the exact one). It also answers nearest-neighbour queries with indices.
    """

    column = S.OOD_KNN
    input_kind = "features"
    search: str = "auto"
    """Neighbour search of :class:`analysis.neighbors.NeighborIndex` ("auto", "exact", "clustered")."""

    def __init__(
        self, *, k: int | Literal["auto"] = "auto", block_size: int = 1024,
        max_train: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.k = k
        self.block_size = block_size
        self.max_train = max_train
        self.random_state = random_state

    def fit(self, features: ArrayLike, labels: ArrayLike | None = None) -> KNNScorer:  # type: ignore[override]
        """Store the normalised training features; ``labels`` is ignored. Returns ``self``."""
        if self.k != "auto" and (isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer))
                                 or self.k < 1):
            raise ValueError(f"Expected `k` to be a positive integer or 'auto', got {self.k!r}.")
        if self.max_train is not None and (not isinstance(self.max_train, (int, np.integer))
                                           or self.max_train < 2):
            raise ValueError(f"Expected `max_train` None or an integer >= 2, got {self.max_train!r}.")
        x = _as_2d_float(features, "features", "n_features")
        if x.shape[0] < 2:
            raise ValueError(f"Expected at least 2 training rows for kNN, got {x.shape[0]}.")
        n_fit = x.shape[0]
        if self.max_train is not None and n_fit > self.max_train:
            rng = np.random.default_rng(self.random_state)
            bank = np.sort(rng.choice(n_fit, int(self.max_train), replace=False))
        else:
            bank = np.arange(n_fit)
        self.bank_index_ = bank
        self.train_ = _l2_normalise(x[bank] if len(bank) < n_fit else x)
        self._bank_unit_ = np.einsum("ij,ij->i", self.train_, self.train_).round().astype(np.float32)
        self._has_zero_rows_ = bool((self._bank_unit_ == 0).any())
        self._n_fit_ = n_fit
        k = auto_k(len(bank)) if self.k == "auto" else int(self.k)
        if k > len(bank) - 1:
            warnings.warn(
                f"k={k} exceeds the {len(bank)} training rows minus one; using k={len(bank) - 1}.",
                stacklevel=2,
            )
            k = len(bank) - 1
        self.k_ = k
        self.n_features_in_ = int(x.shape[1])
        self.index_ = neighbors.NeighborIndex(method=self.search, block_size=self.block_size,  # type: ignore[arg-type]
                                              random_state=self.random_state).fit(self.train_)
        return self

    _mean_of_k = False
    """:class:`KNNMeanScorer`: the mean distance to the k nearest instead of the k-th distance."""

    def _kth(self, q: NDArray[np.float32], exclude: NDArray[np.intp] | None) -> NDArray[np.float64]:
        """k-th neighbour distance of every query row; ``exclude[i]``: bank row to skip (-1: none)."""
        q_unit = np.einsum("ij,ij->i", q, q).round().astype(np.float32)  # 1, or 0 for a zero row
        if not self._has_zero_rows_ and np.all(q_unit):
            if self._mean_of_k:
                return self.index_.mean_distance(q, self.k_, exclude=exclude)
            return self.index_.kth_distance(q, self.k_, exclude=exclude)
        return self._kth_with_zero_rows(q, exclude)

    def _kth_with_zero_rows(self, q: NDArray[np.float32], exclude: NDArray[np.intp] | None) -> NDArray[np.float64]:
        """Exact k-th neighbour distances when zero rows are involved (see the class docstring)."""
        t = self.train_
        k = self.k_
        q_unit = np.einsum("ij,ij->i", q, q).round().astype(np.float32)  # 1, or 0 for a zero row
        out = np.empty(q.shape[0], dtype=np.float64)
        b = max(1, int(self.block_size))
        for s in range(0, q.shape[0], b):
            sims = q[s : s + b] @ t.T  # (b, n_bank)
            if self._has_zero_rows_ or not np.all(q_unit[s : s + b]):
                # A zero row stays zero after normalisation: ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b
                # with |a|^2 in {0, 1}, i.e. similarity a.b + (2 - |a|^2 - |b|^2) / 2 (zero rows
                # are at distance 0 from each other and 1 from every unit row, not sqrt(2)).
                sims += (2.0 - q_unit[s : s + b, None] - self._bank_unit_[None, :]) / 2.0
            if exclude is not None:
                ex = exclude[s : s + b]
                rows = np.flatnonzero(ex >= 0)
                sims[rows, ex[rows]] = -np.inf
            if self._mean_of_k:  # the k largest similarities == the k smallest distances
                top = -np.partition(-sims, k - 1, axis=1)[:, :k].astype(np.float64)
                out[s : s + b] = np.sqrt(np.maximum(2.0 - 2.0 * top, 0.0)).mean(axis=1)
                continue
            # k-th largest similarity == k-th smallest distance
            kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
            out[s : s + b] = np.sqrt(np.maximum(2.0 - 2.0 * kth.astype(np.float64), 0.0))
        return out

    def _score(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        return self._kth(_l2_normalise(x), None)

    def score_fitted(self, x: ArrayLike) -> NDArray[np.float64]:
        """Leave-one-out scores of the training rows (each row is not its own neighbour).

        Parameters
        ----------
        x : array-like, shape (n_train, n_features)
            The features given to ``fit``, same order.
        """
        self._check_fitted()
        arr = self._check_input(x)
        if arr.shape[0] != self._n_fit_:
            raise ValueError(f"Expected the {self._n_fit_} rows given to `fit`, got {arr.shape[0]}.")
        exclude = np.full(arr.shape[0], -1, dtype=np.intp)
        exclude[self.bank_index_] = np.arange(len(self.bank_index_))
        return self._kth(_l2_normalise(arr), exclude)


class KNNMeanScorer(KNNScorer):
    """Mean distance to the k nearest training features after L2 normalisation.

    As :class:`KNNScorer` (same parameters, bank, leave-one-out and zero rows), but the score is
    ``mean_{j<=k} ||x/||x|| - t_(j)/||t_(j)|| ||_2`` over the k nearest training rows instead of
    the k-th distance alone: less sensitive to which single neighbour happens to be k-th. Close
    to cleanlab's ``OutOfDistribution`` feature score (the mean cosine distance ``1 - cos`` =
    ``d^2 / 2`` over its k nearest neighbours). It ranked the OOD rows better than the k-th
    distance on 8 of 9 runs of ``benchmarks/suite.py`` (docs/ood.md); the default OOD score
    ``ood_combined`` uses it.

    Examples
    --------
    >>> s = KNNMeanScorer(k=2).fit(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    >>> s.score(np.array([[2.0, 0.0]])).round(4).tolist()  # distances 0 and sqrt(2)
    [0.7071]
    """

    column = S.OOD_KNN_MEAN
    _mean_of_k = True


# ---- registry ---------------------------------------------------------------------------------------------

SCORERS: dict[str, type[_Scorer]] = {
    S.OOD_MSP: MSPScorer,
    S.OOD_MAXLOGIT: MaxLogitScorer,
    S.OOD_ENERGY: EnergyScorer,
    S.OOD_MAHALANOBIS: MahalanobisScorer,
    S.OOD_RMD: RelativeMahalanobisScorer,
    S.OOD_KNN: KNNScorer,
    S.OOD_KNN_MEAN: KNNMeanScorer,
}
"""Table column -> scorer class."""

LOGIT_SCORERS = tuple(c for c, cls in SCORERS.items() if cls.input_kind == "logits")
FEATURE_SCORERS = tuple(c for c, cls in SCORERS.items() if cls.input_kind == "features")


def make_scorer(column: str, **params: Any) -> _Scorer:
    """Build the scorer for an ``ood_*`` column (``"ood_energy"``) or its short name (``"energy"``).

    Examples
    --------
    >>> make_scorer("energy", temperature=2.0)
    EnergyScorer(temperature=2.0)
    """
    key = column if column.startswith(S.OOD_PREFIX) else S.OOD_PREFIX + column
    if key not in SCORERS:
        names = ", ".join(c[len(S.OOD_PREFIX) :] for c in SCORERS)
        raise ValueError(f"Expected an OOD scorer among {names}, got {column!r}.")
    return SCORERS[key](**params)


# ---- conversion to other libraries (the one place) ------------------------------------------------------


@dataclass(frozen=True)
class LibraryConvention:
    """How another library's score for the same method relates to ours.

    ``theirs = sign * ours * scale(n_train)`` when ``transform`` is ``"linear"``;
    ``theirs = sign * ours**2`` when ``"square"``. ``None`` in the table: no faithful mapping.
    """

    library: str
    name: str
    sign: float
    transform: Literal["linear", "square"] = "linear"
    scale_by_n: bool = False
    """Divide by ``n_factor * N``: pytorch-ood's Mahalanobis uses half the squared distance under
    the unnormalised scatter matrix (plus a 1e-6 ridge), i.e. ``ours / (2 N)``; its RMD the full
    squared distances under unnormalised scatters, i.e. ``ours / N``."""
    n_factor: float = 2.0
    note: str = ""


LIBRARY_CONVENTIONS: dict[tuple[str, str], LibraryConvention | None] = {
    # pytorch-ood 0.4.0: outlier scores, higher = more anomalous.
    ("pytorch-ood", S.OOD_MSP): LibraryConvention("pytorch-ood", "MaxSoftmax", 1.0),
    ("pytorch-ood", S.OOD_MAXLOGIT): LibraryConvention("pytorch-ood", "MaxLogit", 1.0),
    ("pytorch-ood", S.OOD_ENERGY): LibraryConvention("pytorch-ood", "EnergyBased", 1.0),
    ("pytorch-ood", S.OOD_MAHALANOBIS): LibraryConvention(
        "pytorch-ood", "Mahalanobis", 1.0, scale_by_n=True,
        note="0.5 * min_k d_k with the covariance not divided by N (+1e-6 ridge)",
    ),
    ("pytorch-ood", S.OOD_RMD): LibraryConvention(
        "pytorch-ood", "RMD", 1.0, scale_by_n=True, n_factor=1.0,
        note="min_k d_k - d_0 with both covariances not divided by N (+1e-6 ridge), no 1/2 factor",
    ),
    ("pytorch-ood", S.OOD_KNN): LibraryConvention("pytorch-ood", "KNN", 1.0),
    ("pytorch-ood", S.OOD_KNN_MEAN): None,
    # OpenOOD v1.5 postprocessors return a confidence, higher = more in-distribution.
    ("openood", S.OOD_MSP): LibraryConvention("openood", "MSPPostprocessor", -1.0),
    ("openood", S.OOD_MAXLOGIT): LibraryConvention("openood", "MaxLogitPostprocessor", -1.0),
    ("openood", S.OOD_ENERGY): LibraryConvention("openood", "EBOPostprocessor", -1.0),
    ("openood", S.OOD_MAHALANOBIS): LibraryConvention("openood", "MDSPostprocessor", -1.0),
    ("openood", S.OOD_RMD): LibraryConvention("openood", "RMDSPostprocessor", -1.0),
    ("openood", S.OOD_KNN): LibraryConvention(
        "openood", "KNNPostprocessor", -1.0, transform="square",
        note="faiss IndexFlatL2 returns squared distances",
    ),
    ("openood", S.OOD_KNN_MEAN): None,
}
"""(library, column) -> convention. The single source of sign/scale conversions."""


def to_library_score(
    column: str,
    scores: ArrayLike,
    *,
    library: Library,
    n_train: int | None = None,
) -> NDArray[np.float64]:
    """Convert our ``ood_*`` scores to another library's sign and scale.

    Parameters
    ----------
    column : str
        An ``ood_*`` column name.
    scores : array-like, shape (n_examples,)
    library : {"pytorch-ood", "openood"}
    n_train : int, optional
        Training rows ``N`` (``MahalanobisScorer.n_samples_fit_``); needed for pytorch-ood's
        Mahalanobis scale.

    Returns
    -------
    ndarray of float64, shape (n_examples,)

    Examples
    --------
    >>> to_library_score("ood_msp", [-0.9], library="openood")
    array([0.9])
    """
    if (library, column) not in LIBRARY_CONVENTIONS:
        known = sorted({lib for lib, _ in LIBRARY_CONVENTIONS})
        raise ValueError(f"Expected a library among {known} and an ood_* column, got "
                         f"({library!r}, {column!r}).")
    conv = LIBRARY_CONVENTIONS[(library, column)]
    if conv is None:
        raise ValueError(f"{library} has no score equal (up to sign and scale) to {column}.")
    s = np.asarray(scores, dtype=np.float64)
    if conv.transform == "square":
        s = s**2
    if conv.scale_by_n:
        if n_train is None or n_train < 1:
            raise ValueError(f"Expected `n_train` >= 1 to convert {column} to {library}, got {n_train!r}.")
        s = s / (conv.n_factor * n_train)
    return conv.sign * s
