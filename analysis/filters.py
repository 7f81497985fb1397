"""Filters, geometric selections and plot sampling over the example table.

Everything returns a boolean mask (or row indices) over the rows of the table, so a filter, a
lasso polygon and an export all refer to the same rows. The work is vectorised: a typical filter
over a million rows takes tens of milliseconds, and a lasso polygon is applied to every row on
the server (ray casting, even-odd rule: a loop over the polygon's edges, vectorised over points),
not only to the points a plot happened to draw.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike, NDArray

from analysis import schema as S
from analysis.flags import FLAG

__all__ = [
    "FilterSpec",
    "FlaggedChoice",
    "apply_filter",
    "exact_id_row",
    "points_in_polygon",
    "points_in_box",
    "plot_sample",
    "extreme_mask",
    "LOW_IS_EXTREME",
    "load_filter_spec",
]

FlaggedChoice = Literal["any", "flagged", "unflagged"]
_FLAGGED_CHOICES: tuple[str, ...] = get_args(FlaggedChoice)

LOW_IS_EXTREME: frozenset[str] = frozenset({S.AUM, S.CONFIDENCE, S.CORRECTNESS, S.MARGIN})
"""Metric columns whose *low* values are the suspicious ones (all others: high values)."""

_LIST_FIELDS = ("splits", "labels", "regions", "diagnoses", "flag_values")


@dataclass
class FilterSpec:
    """A filter over the example table; every set criterion must hold (logical AND).

    Attributes
    ----------
    splits, regions, diagnoses : list of str or None
        Keep rows whose ``split``/``region``/``diagnosis`` is one of these; ``None``: no criterion.
        An empty list keeps nothing.
    labels : list of int or None
        Keep rows whose ``label`` is one of these.
    ranges : dict of str to (float, float)
        Column → inclusive ``[lo, hi]``; rows with a missing (NaN) value in that column are
        excluded. Use ``-inf``/``inf`` for one-sided ranges (JSON: ``null``).
    flagged : {"any", "flagged", "unflagged"}
        Whether the row has a flag (from the journal's latest state).
    flag_values : list of str or None
        Keep rows whose flag is one of these.
    search : str or None
        Case-insensitive substring of ``example_id`` (as text) or ``text``.

    Examples
    --------
    >>> spec = FilterSpec(splits=["train"], ranges={"confidence": (0.0, 0.3)})
    >>> spec.describe()
    'split ∈ {train}; confidence ∈ [0.0, 0.3]'
    >>> FilterSpec.from_dict(spec.to_dict()) == spec
    True
    """

    splits: list[str] | None = None
    labels: list[int] | None = None
    regions: list[str] | None = None
    diagnoses: list[str] | None = None
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    flagged: FlaggedChoice = "any"
    flag_values: list[str] | None = None
    search: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> FilterSpec:
        """Check and normalise the fields in place (lists, float ranges); return ``self``."""
        for name in _LIST_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray, set, frozenset, pd.Index)):
                raise TypeError(f"Expected `{name}` to be a list or None, got {type(value).__name__} {value!r}.")
            items = list(value)
            if name == "labels":
                for v in items:
                    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                        raise TypeError(f"Expected `labels` to hold ints, got {v!r}.")
                items = [int(v) for v in items]
            else:
                for v in items:
                    if not isinstance(v, str):
                        raise TypeError(f"Expected `{name}` to hold strings, got {v!r}.")
            setattr(self, name, items)
        if not isinstance(self.ranges, Mapping):
            raise TypeError(f"Expected `ranges` to be a dict of column -> (lo, hi), got {self.ranges!r}.")
        ranges: dict[str, tuple[float, float]] = {}
        for col, bounds in self.ranges.items():
            if not isinstance(col, str):
                raise TypeError(f"Expected `ranges` keys to be column names, got {col!r}.")
            try:
                lo_raw, hi_raw = bounds
                lo = -math.inf if lo_raw is None else float(lo_raw)
                hi = math.inf if hi_raw is None else float(hi_raw)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"Expected `ranges[{col!r}]` to be (lo, hi) numbers, got {bounds!r}."
                ) from exc
            if math.isnan(lo) or math.isnan(hi) or lo > hi:
                raise ValueError(f"Expected `ranges[{col!r}]` to have lo <= hi, got ({lo}, {hi}).")
            ranges[col] = (lo, hi)
        self.ranges = ranges
        if self.flagged not in _FLAGGED_CHOICES:
            raise ValueError(f"Expected `flagged` in {_FLAGGED_CHOICES}, got {self.flagged!r}.")
        if self.search is not None and not isinstance(self.search, str):
            raise TypeError(f"Expected `search` to be a str or None, got {type(self.search).__name__}.")
        if self.search == "":
            self.search = None
        return self

    def is_empty(self) -> bool:
        """Whether the spec keeps every row."""
        return (
            all(getattr(self, n) is None for n in _LIST_FIELDS)
            and not self.ranges
            and self.flagged == "any"
            and not self.search
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (infinite range bounds become ``None``); inverse of :meth:`from_dict`."""
        def bound(v: float) -> float | None:
            return None if math.isinf(v) else v

        return {
            "splits": self.splits,
            "labels": self.labels,
            "regions": self.regions,
            "diagnoses": self.diagnoses,
            "ranges": {c: [bound(lo), bound(hi)] for c, (lo, hi) in self.ranges.items()},
            "flagged": self.flagged,
            "flag_values": self.flag_values,
            "search": self.search,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FilterSpec:
        """Build a spec from :meth:`to_dict` output (missing keys take their defaults).

        Raises
        ------
        ValueError
            Unknown keys or bad values.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"Expected a dict for a filter spec, got {type(d).__name__}.")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Expected filter keys among {sorted(known)}, got unknown keys {unknown}.")
        kwargs = dict(d)
        if kwargs.get("ranges") is None:
            kwargs.pop("ranges", None)
        if kwargs.get("flagged") is None:
            kwargs.pop("flagged", None)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> FilterSpec:
        """Parse :meth:`to_json` output."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Expected a JSON object for the filter spec ({exc}).") from exc
        return cls.from_dict(d)

    def describe(self) -> str:
        """One human-readable line, e.g. ``split ∈ {train}; confidence ∈ [0.0, 0.3]``."""
        parts: list[str] = []

        def members(name: str, values: list[Any] | None) -> None:
            if values is not None:
                parts.append(f"{name} ∈ {{{', '.join(str(v) for v in values)}}}")

        members(S.SPLIT, self.splits)
        members(S.LABEL, self.labels)
        members(S.REGION, self.regions)
        members(S.DIAGNOSIS, self.diagnoses)
        for col, (lo, hi) in self.ranges.items():
            if math.isinf(lo) and math.isinf(hi):
                parts.append(f"{col} is set")
            elif math.isinf(lo):
                parts.append(f"{col} ≤ {hi}")
            elif math.isinf(hi):
                parts.append(f"{col} ≥ {lo}")
            else:
                parts.append(f"{col} ∈ [{lo}, {hi}]")
        if self.flagged != "any":
            parts.append(self.flagged)
        members(FLAG, self.flag_values)
        if self.search:
            parts.append(f"id/text contains {self.search!r}")
        return "; ".join(parts) if parts else "all examples"


# ---- applying a spec ----------------------------------------------------------------------------


def _isin(column: pd.Series, values: Sequence[Any]) -> NDArray[np.bool_]:
    if isinstance(column.dtype, pd.CategoricalDtype):
        cats = column.cat.categories
        keep = np.asarray(cats.isin(list(values)), dtype=bool)
        codes = column.cat.codes.to_numpy()
        return np.where(codes >= 0, keep[codes], False)
    return np.asarray(column.isin(list(values)).to_numpy(dtype=bool, na_value=False), dtype=bool)


def _column(table: pd.DataFrame, name: str, what: str) -> pd.Series:
    if name not in table.columns:
        raise ValueError(
            f"Expected the table to have a `{name}` column for the {what} filter; it has "
            f"{list(table.columns)[:20]}."
        )
    return table[name]


def _flag_column(table: pd.DataFrame, flags: pd.DataFrame | None) -> pd.Series | None:
    """The flag of each table row (missing: no flag), from ``flags`` or the table's own column."""
    if flags is not None:
        if S.EXAMPLE_ID not in flags.columns or FLAG not in flags.columns:
            raise ValueError(
                f"Expected `flags` to come from FlagJournal.latest() (columns example_id, flag), "
                f"got {list(flags.columns)}."
            )
        if flags.empty:
            return None
        pos = pd.Index(flags[S.EXAMPLE_ID]).get_indexer(table[S.EXAMPLE_ID])
        return pd.Series(flags[FLAG].astype("str").array.take(pos, allow_fill=True))
    if FLAG in table.columns:
        return table[FLAG].reset_index(drop=True)
    return None


def exact_id_row(table: pd.DataFrame, text: str) -> int | None:
    """The row whose ``example_id`` is exactly ``text`` (an integer id read from its digits), or
    None. The search filter matches substrings (``53`` also finds ``153``); this finds the one.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"example_id": [153, 53, 530]})
    >>> exact_id_row(t, " 53 "), exact_id_row(t, "5"), exact_id_row(t, "x")
    (1, None, None)
    """
    needle = text.strip() if isinstance(text, str) else ""
    if not needle or S.EXAMPLE_ID not in table.columns:
        return None
    ids = table[S.EXAMPLE_ID]
    if pd.api.types.is_integer_dtype(ids.dtype):
        try:
            value: Any = int(needle)
        except ValueError:
            return None
    else:
        value = needle
    hits = np.flatnonzero((ids == value).to_numpy(dtype=bool, na_value=False))
    return int(hits[0]) if hits.size else None


def _search_mask(table: pd.DataFrame, needle: str) -> NDArray[np.bool_]:
    mask = np.zeros(len(table), dtype=bool)
    for col in (S.EXAMPLE_ID, S.TEXT):
        if col not in table.columns:
            continue
        arr = pa.array(table[col], from_pandas=True)
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            try:
                arr = pc.cast(arr, pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                arr = pa.array(table[col].astype(str), from_pandas=True)
        hit = pc.match_substring(arr, needle, ignore_case=True)
        mask |= np.asarray(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), dtype=bool)
    return mask


def apply_filter(
    table: pd.DataFrame, spec: FilterSpec | Mapping[str, Any] | None, *, flags: pd.DataFrame | None = None
) -> NDArray[np.bool_]:
    """Boolean mask of the table rows that pass ``spec``.

    Parameters
    ----------
    table : DataFrame
        The example table (``table.parquet``), optionally with flags joined by
        :func:`analysis.flags.apply_flags`.
    spec : FilterSpec, dict or None
        The filter; a dict is read with :meth:`FilterSpec.from_dict`; ``None`` keeps every row.
    flags : DataFrame, optional
        :meth:`FlagJournal.latest`, for the ``flagged``/``flag_values`` criteria. Without it the
        table's own ``flag`` column is used, and without that no row is flagged.

    Returns
    -------
    ndarray of bool, shape (n_rows,)

    Raises
    ------
    ValueError
        A criterion names a column the table lacks, or a range column is not numeric.
    """
    if spec is None:
        return np.ones(len(table), dtype=bool)
    if not isinstance(spec, FilterSpec):
        spec = FilterSpec.from_dict(spec)
    spec.validate()  # fields may have been assigned after construction
    mask = np.ones(len(table), dtype=bool)
    for name, col in (("splits", S.SPLIT), ("labels", S.LABEL), ("regions", S.REGION),
                      ("diagnoses", S.DIAGNOSIS)):
        values = getattr(spec, name)
        if values is not None:
            mask &= _isin(_column(table, col, name), values)
    for col, (lo, hi) in spec.ranges.items():
        ser = _column(table, col, "range")
        if not (pd.api.types.is_numeric_dtype(ser.dtype) and not pd.api.types.is_bool_dtype(ser.dtype)):
            raise ValueError(f"Expected range column `{col}` to be numeric, got dtype {ser.dtype}.")
        vals = ser.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            mask &= (vals >= lo) & (vals <= hi)
    if spec.flagged != "any" or spec.flag_values is not None:
        flag = _flag_column(table, flags)
        if flag is None:
            has = np.zeros(len(table), dtype=bool)
        else:
            has = np.asarray(flag.notna().to_numpy() & (flag != "").to_numpy(dtype=bool, na_value=False))
        if spec.flagged == "flagged":
            mask &= has
        elif spec.flagged == "unflagged":
            mask &= ~has
        if spec.flag_values is not None:
            mask &= has & (_isin(flag, spec.flag_values) if flag is not None else False)
    if spec.search:
        mask &= _search_mask(table, spec.search)
    return mask


# ---- geometry -----------------------------------------------------------------------------------


def _xy(x: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"Expected `x` and `y` of the same length, got {xa.shape[0]} and {ya.shape[0]}.")
    return xa, ya


def points_in_polygon(x: ArrayLike, y: ArrayLike, polygon: ArrayLike) -> NDArray[np.bool_]:
    """Which points lie inside a polygon (even-odd rule, ray casting).

    For each edge, a point toggles its inside state when a horizontal ray from it to +x crosses
    the edge (the PNPOLY test). Vectorised over points; loops over the polygon's edges only.
    Points with a NaN coordinate are outside. A self-intersecting lasso follows the even-odd
    rule (as Plotly's own selection does).

    Parameters
    ----------
    x, y : array-like, shape (n_points,)
        Point coordinates.
    polygon : array-like, shape (n_vertices, 2)
        Vertices in order; closing the ring (repeating the first vertex) is optional.

    Returns
    -------
    ndarray of bool, shape (n_points,)

    Examples
    --------
    >>> points_in_polygon([0.5, 2.0], [0.5, 0.5], [(0, 0), (1, 0), (1, 1), (0, 1)]).tolist()
    [True, False]
    """
    xa, ya = _xy(x, y)
    poly = np.asarray(polygon, dtype=np.float64)
    if poly.ndim != 2 or poly.shape[1] != 2:
        raise ValueError(f"Expected `polygon` to have shape (n_vertices, 2), got {poly.shape}.")
    if not np.isfinite(poly).all():
        raise ValueError("Expected `polygon` vertices to be finite numbers.")
    inside = np.zeros(xa.shape[0], dtype=bool)
    n = poly.shape[0]
    if n < 3:
        return inside
    # Candidate points within the polygon's bounding box only (cheap pre-filter).
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    with np.errstate(invalid="ignore"):
        cand = np.flatnonzero((xa >= lo[0]) & (xa <= hi[0]) & (ya >= lo[1]) & (ya <= hi[1]))
    # Sort the candidates by y once: the points an edge can toggle (min(yi, yj) <= y <
    # max(yi, yj)) are then one contiguous slice, found by binary search.
    order = np.argsort(ya[cand], kind="stable")
    cand = cand[order]
    px, py = xa[cand], ya[cand]
    hit = np.zeros(cand.shape[0], dtype=bool)
    j = n - 1
    for i in range(n):
        xi, yi = poly[i]
        xj, yj = poly[j]
        j = i
        if yi == yj:
            continue  # a horizontal edge is never crossed by a horizontal ray
        # (yi > y) != (yj > y)  <=>  min(yi, yj) <= y < max(yi, yj)
        a, b = np.searchsorted(py, (min(yi, yj), max(yi, yj)), side="left")
        if a == b:
            continue
        x_cross = (xj - xi) * (py[a:b] - yi) / (yj - yi) + xi
        hit[a:b] ^= px[a:b] < x_cross
    inside[cand] = hit
    return inside


def points_in_box(
    x: ArrayLike, y: ArrayLike, x_range: tuple[float, float], y_range: tuple[float, float]
) -> NDArray[np.bool_]:
    """Which points lie in the closed box ``x_range × y_range`` (bounds in either order).

    Returns
    -------
    ndarray of bool, shape (n_points,); NaN coordinates are outside.
    """
    xa, ya = _xy(x, y)
    x0, x1 = sorted(float(v) for v in x_range)
    y0, y1 = sorted(float(v) for v in y_range)
    with np.errstate(invalid="ignore"):
        return (xa >= x0) & (xa <= x1) & (ya >= y0) & (ya <= y1)


# ---- sampling for plots -------------------------------------------------------------------------


def _as_index(arr: ArrayLike | None, n: int, name: str) -> NDArray[np.int64]:
    if arr is None:
        return np.zeros(0, dtype=np.int64)
    a = np.asarray(arr)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError(f"Expected boolean `{name}` of shape ({n},), got {a.shape}.")
        return np.flatnonzero(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"Expected `{name}` to be a boolean mask or row indices, got dtype {a.dtype}.")
    a = np.unique(a.astype(np.int64).ravel())
    if a.size and (a[0] < 0 or a[-1] >= n):
        raise ValueError(f"Expected `{name}` row indices in [0, {n}), got {a[0]}..{a[-1]}.")
    return a


def plot_sample(
    n_rows: int | ArrayLike,
    *,
    max_points: int,
    priority: ArrayLike | None = None,
    seed: int = 0,
) -> NDArray[np.int64]:
    """Row indices to draw: every candidate row if they fit, else a bounded, deterministic sample.

    Priority rows (flagged, extreme) among the candidates come first, up to ``max_points``
    (uniformly sampled among themselves if there are more); the remaining budget is a uniform
    sample of the other candidates.

    Parameters
    ----------
    n_rows : int or ndarray of bool, shape (n_rows,)
        Number of table rows (all are candidates), or a mask of the candidate rows (a filter).
    max_points : int
        Most rows to return (>= 0).
    priority : ndarray of bool (n_rows,) or of int row indices, optional
        Rows to keep before any other.
    seed : int, default 0
        Seed of the uniform sample.

    Returns
    -------
    ndarray of int64
        Sorted row indices into the table.

    Examples
    --------
    >>> plot_sample(5, max_points=10).tolist()
    [0, 1, 2, 3, 4]
    >>> rows = plot_sample(1000, max_points=3, priority=[7, 500])
    >>> len(rows), {7, 500} <= set(rows.tolist())
    (3, True)
    """
    if isinstance(max_points, (bool, np.bool_)) or not isinstance(max_points, (int, np.integer)) or max_points < 0:
        raise ValueError(f"Expected `max_points` to be an int >= 0, got {max_points!r}.")
    if isinstance(n_rows, (int, np.integer)) and not isinstance(n_rows, (bool, np.bool_)):
        n = int(n_rows)
        if n < 0:
            raise ValueError(f"Expected `n_rows` >= 0, got {n}.")
        cand = np.arange(n, dtype=np.int64)
        cand_mask = None
    else:
        m = np.asarray(n_rows)
        if m.dtype != bool or m.ndim != 1:
            raise TypeError(f"Expected `n_rows` to be an int or a 1-d boolean mask, got {m.dtype} {m.shape}.")
        n = m.shape[0]
        cand = np.flatnonzero(m).astype(np.int64)
        cand_mask = m
    if cand.size <= max_points:
        return cand
    rng = np.random.default_rng(seed)
    prio = _as_index(priority, n, "priority")
    if cand_mask is not None and prio.size:
        prio = prio[cand_mask[prio]]
    if prio.size >= max_points:
        return np.sort(rng.choice(prio, size=max_points, replace=False))
    is_prio = np.zeros(n, dtype=bool)
    is_prio[prio] = True
    rest = cand[~is_prio[cand]]
    picked = rng.choice(rest, size=max_points - prio.size, replace=False)
    return np.sort(np.concatenate([prio, picked]))


def extreme_mask(
    table: pd.DataFrame,
    columns: Sequence[str] | Mapping[str, Literal["lowest", "highest"]],
    *,
    k: int,
) -> NDArray[np.bool_]:
    """Mask of the ``k`` most extreme rows of each column (union over columns).

    Parameters
    ----------
    table : DataFrame
    columns : sequence of str, or dict of column → ``"lowest"``/``"highest"``
        With plain names the direction is the suspicious end: lowest for
        :data:`LOW_IS_EXTREME` (``aum``, ``confidence``, ``correctness``, ``margin``), highest
        for all others (``ood_*`` scores, ``variability``, ``forgetting``, ``loss_mean``, ...).
        Columns the table lacks are skipped.
    k : int
        Rows per column (>= 0). Missing values are never extreme. Ties at the cut are broken by
        row order.

    Returns
    -------
    ndarray of bool, shape (n_rows,)

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"aum": [0.5, -2.0, 1.0, -1.0], "ood_energy": [3.0, 0.0, 1.0, 2.0]})
    >>> extreme_mask(t, ["aum", "ood_energy"], k=1).tolist()
    [True, True, False, False]
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"Expected `k` to be an int >= 0, got {k!r}.")
    if isinstance(columns, str):
        raise TypeError("Expected `columns` to be a list of column names or a dict, got a str.")
    if isinstance(columns, Mapping):
        items = list(columns.items())
    else:
        items = [(c, "lowest" if c in LOW_IS_EXTREME else "highest") for c in columns]
    mask = np.zeros(len(table), dtype=bool)
    for col, direction in items:
        if direction not in ("lowest", "highest"):
            raise ValueError(f"Expected direction 'lowest' or 'highest' for `{col}`, got {direction!r}.")
        if col not in table.columns or k == 0:
            continue
        vals = table[col].to_numpy(dtype=np.float64, na_value=np.nan)
        valid = np.flatnonzero(~np.isnan(vals))
        if valid.size == 0:
            continue
        v = vals[valid] if direction == "lowest" else -vals[valid]
        if valid.size <= k:
            mask[valid] = True
            continue
        # The k smallest of v, ties at the cut broken by row order, in O(n).
        cut = np.partition(v, k - 1)[k - 1]
        below = np.flatnonzero(v < cut)
        at_cut = np.flatnonzero(v == cut)[: k - below.size]
        mask[valid[below]] = True
        mask[valid[at_cut]] = True
    return mask


def load_filter_spec(source: str | os.PathLike[str]) -> FilterSpec:
    """Read a filter spec from JSON text, a JSON file, or an export manifest (its ``filter``).

    Parameters
    ----------
    source : str or path-like
        ``'{"splits": ["train"]}'``, a path to such a file, or a ``*.manifest.json`` path.

    Raises
    ------
    ValueError
        Neither valid JSON nor a readable file, or an invalid spec.
    """
    text = str(source)
    where = "--filter"
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise ValueError(
                f"Expected `--filter` to be a JSON object or a path to a JSON file, got {text[:200]!r}."
            )
        where = f"--filter file {str(path)!r}"
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{where}: expected UTF-8 JSON text, got byte {path.read_bytes()[exc.start:exc.start + 1]!r} "
                f"at offset {exc.start} (a binary file?)."
            ) from exc
        except OSError as exc:
            raise ValueError(f"{where} cannot be read ({exc.strerror}).") from exc
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: expected a JSON object ({exc}).") from exc
    except RecursionError as exc:
        raise ValueError(f"{where}: JSON nested too deeply to be a filter spec.") from exc
    try:
        if isinstance(d, Mapping) and "manifest_version" in d and "filter" in d:
            block = d["filter"]
            spec = block.get("spec") if isinstance(block, Mapping) else block
            if spec is not None and not isinstance(spec, Mapping):
                raise TypeError(f"Expected the manifest's `filter.spec` to be an object, got {type(spec).__name__}.")
            return FilterSpec() if spec is None else FilterSpec.from_dict(spec)
        return FilterSpec.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
