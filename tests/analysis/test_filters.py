"""Filters, lasso/box geometry, plot sampling and extremes, against independent references."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from analysis import schema as S
from analysis.filters import (
    FilterSpec,
    apply_filter,
    extreme_mask,
    load_filter_spec,
    plot_sample,
    points_in_box,
    points_in_polygon,
)
from analysis.flags import FLAG

try:  # matplotlib is the preferred reference when it is installed
    from matplotlib.path import Path as MplPath
except ImportError:  # pragma: no cover - depends on the environment
    MplPath = None

SPLITS = ["train", "test", "ood:far"]
REGIONS = [S.EASY, S.AMBIGUOUS, S.HARD]
DIAGNOSES = ["clean", "ambiguous", "suspect_mislabeled", "suspect_ood"]


def _table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    conf = rng.random(n)
    conf[rng.random(n) < 0.1] = np.nan
    label = pd.array(rng.integers(0, 4, n), dtype="Int64")
    label[rng.random(n) < 0.1] = pd.NA
    return pd.DataFrame({
        S.EXAMPLE_ID: np.arange(1000, 1000 + n),
        S.SPLIT: pd.Series(rng.choice(SPLITS, n), dtype="str"),
        S.LABEL: label,
        S.REGION: pd.Categorical(rng.choice(REGIONS, n), categories=list(S.REGIONS)),
        S.DIAGNOSIS: pd.Series(rng.choice(DIAGNOSES, n), dtype="str"),
        S.CONFIDENCE: conf,
        S.AUM: rng.normal(size=n),
        S.TEXT: pd.Series([f"Example {i} {'cat' if i % 7 == 0 else 'dog'}" for i in range(n)], dtype="str"),
    })


TABLE = _table()
FLAGS = pd.DataFrame({
    S.EXAMPLE_ID: np.array([1000, 1005, 1010, 1200]),
    FLAG: pd.Series(["mislabeled", None, "ood", "keep"], dtype="str"),
})


def _reference_filter(table: pd.DataFrame, spec: FilterSpec, flags: pd.DataFrame | None) -> np.ndarray:
    """Row-by-row evaluation with plain Python: the meaning of each criterion, spelled out."""
    flag_of = {} if flags is None else {
        int(i): f for i, f in zip(flags[S.EXAMPLE_ID], flags[FLAG], strict=True) if isinstance(f, str)
    }
    out = []
    for row in table.to_dict("records"):
        ok = True
        if spec.splits is not None:
            ok &= row[S.SPLIT] in spec.splits
        if spec.labels is not None:
            ok &= row[S.LABEL] is not pd.NA and row[S.LABEL] in spec.labels
        if spec.regions is not None:
            ok &= row[S.REGION] in spec.regions
        if spec.diagnoses is not None:
            ok &= row[S.DIAGNOSIS] in spec.diagnoses
        for col, (lo, hi) in spec.ranges.items():
            v = row[col]
            ok &= not (v is None or (isinstance(v, float) and math.isnan(v))) and lo <= v <= hi
        f = flag_of.get(row[S.EXAMPLE_ID])
        if spec.flagged == "flagged":
            ok &= f is not None
        elif spec.flagged == "unflagged":
            ok &= f is None
        if spec.flag_values is not None:
            ok &= f in spec.flag_values
        if spec.search:
            s = spec.search.lower()
            ok &= s in str(row[S.EXAMPLE_ID]).lower() or s in row[S.TEXT].lower()
        out.append(bool(ok))
    return np.array(out)


_specs = st.builds(
    FilterSpec,
    splits=st.none() | st.lists(st.sampled_from(SPLITS + ["nope"]), max_size=3),
    labels=st.none() | st.lists(st.integers(0, 5), max_size=3),
    regions=st.none() | st.lists(st.sampled_from(REGIONS), max_size=2),
    diagnoses=st.none() | st.lists(st.sampled_from(DIAGNOSES), max_size=2),
    ranges=st.dictionaries(
        st.sampled_from([S.CONFIDENCE, S.AUM]),
        st.tuples(st.floats(-2, 1), st.floats(0, 2)).filter(lambda t: t[0] <= t[1]),
        max_size=2,
    ),
    flagged=st.sampled_from(["any", "flagged", "unflagged"]),
    flag_values=st.none() | st.lists(st.sampled_from(["mislabeled", "ood", "keep"]), max_size=2),
    search=st.none() | st.sampled_from(["CAT", "10", "dog", "zzz"]),
)


@settings(max_examples=60, deadline=None)
@given(spec=_specs)
def test_apply_filter_matches_row_by_row_reference(spec: FilterSpec) -> None:
    got = apply_filter(TABLE, spec, flags=FLAGS)
    np.testing.assert_array_equal(got, _reference_filter(TABLE, spec, FLAGS))


@settings(max_examples=40, deadline=None)
@given(a=_specs, b=_specs)
def test_filters_compose_as_and(a: FilterSpec, b: FilterSpec) -> None:
    """A spec with A's criteria on some fields and B's on the others keeps mask(A) & mask(B)."""
    fields = ["splits", "labels", "regions", "diagnoses"]
    merged = FilterSpec(**{f: getattr(a, f) for f in fields[:2]}, **{f: getattr(b, f) for f in fields[2:]},
                        ranges=a.ranges, flagged=b.flagged, search=a.search)
    left = FilterSpec(**{f: getattr(a, f) for f in fields[:2]}, ranges=a.ranges, search=a.search)
    right = FilterSpec(**{f: getattr(b, f) for f in fields[2:]}, flagged=b.flagged)
    np.testing.assert_array_equal(
        apply_filter(TABLE, merged, flags=FLAGS),
        apply_filter(TABLE, left, flags=FLAGS) & apply_filter(TABLE, right, flags=FLAGS),
    )


@settings(max_examples=50, deadline=None)
@given(spec=_specs)
def test_spec_json_round_trip(spec: FilterSpec) -> None:
    text = json.dumps(spec.to_dict())
    assert FilterSpec.from_dict(json.loads(text)) == spec
    assert FilterSpec.from_json(spec.to_json()) == spec


def test_hand_cases() -> None:
    t = pd.DataFrame({
        S.EXAMPLE_ID: ["a", "b", "c", "d"],
        S.SPLIT: ["train", "train", "test", "train"],
        S.CONFIDENCE: [0.1, np.nan, 0.3, 0.31],
        S.TEXT: ["x", "y", "Hello", None],
    })
    spec = FilterSpec(splits=["train"], ranges={S.CONFIDENCE: (0.0, 0.3)})
    assert apply_filter(t, spec).tolist() == [True, False, False, False]  # NaN excluded, 0.31 out
    assert apply_filter(t, FilterSpec(ranges={S.CONFIDENCE: (0.3, 0.3)})).tolist() == [False, False, True, False]
    assert apply_filter(t, FilterSpec(search="hell")).tolist() == [False, False, True, False]
    assert apply_filter(t, FilterSpec(search="D")).tolist() == [False, False, False, True]
    assert apply_filter(t, FilterSpec(splits=[])).tolist() == [False] * 4  # empty list keeps nothing
    assert apply_filter(t, None).all() and apply_filter(t, FilterSpec()).all()
    assert apply_filter(t, {"splits": ["test"]}).tolist() == [False, False, True, False]
    # Without flags, and without a flag column, nothing is flagged.
    assert not apply_filter(t, FilterSpec(flagged="flagged")).any()
    assert apply_filter(t, FilterSpec(flagged="unflagged")).all()
    # The table's own flag column is used when no journal state is passed.
    t[FLAG] = pd.Series([None, "ood", None, "keep"], dtype="str")
    assert apply_filter(t, FilterSpec(flagged="flagged")).tolist() == [False, True, False, True]
    assert apply_filter(t, FilterSpec(flag_values=["keep"])).tolist() == [False, False, False, True]


def test_one_sided_ranges_and_describe() -> None:
    spec = FilterSpec(splits=["train"], ranges={S.CONFIDENCE: (0.0, 0.3)})
    assert spec.describe() == "split ∈ {train}; confidence ∈ [0.0, 0.3]"
    one = FilterSpec(ranges={S.AUM: (None, 0.0), S.CONFIDENCE: (0.5, None)})  # type: ignore[dict-item]
    assert one.ranges == {S.AUM: (-math.inf, 0.0), S.CONFIDENCE: (0.5, math.inf)}
    assert one.to_dict()["ranges"] == {S.AUM: [None, 0.0], S.CONFIDENCE: [0.5, None]}
    assert one.describe() == "aum ≤ 0.0; confidence ≥ 0.5"
    assert FilterSpec(flagged="flagged", flag_values=["ood"], search="x").describe() == (
        "flagged; flag ∈ {ood}; id/text contains 'x'")
    assert FilterSpec().describe() == "all examples"
    assert FilterSpec().is_empty() and not spec.is_empty() and not FilterSpec(splits=[]).is_empty()
    mask = apply_filter(TABLE, one)
    conf, aum = TABLE[S.CONFIDENCE].to_numpy(), TABLE[S.AUM].to_numpy()
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(mask, (aum <= 0) & (conf >= 0.5))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"splits": "train"}, TypeError, "`splits` to be a list"),
        ({"labels": ["1"]}, TypeError, "`labels` to hold ints"),
        ({"ranges": {"aum": (2.0, 1.0)}}, ValueError, "lo <= hi"),
        ({"ranges": {"aum": (0, "x")}}, ValueError, r"\(lo, hi\) numbers"),
        ({"flagged": "yes"}, ValueError, "`flagged` in"),
    ],
)
def test_bad_specs(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        FilterSpec(**kwargs)


def test_bad_inputs_to_apply_filter() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        FilterSpec.from_dict({"split": ["train"]})
    with pytest.raises(ValueError, match="`nope` column"):
        apply_filter(TABLE, FilterSpec(ranges={"nope": (0, 1)}))
    with pytest.raises(ValueError, match="to be numeric"):
        apply_filter(TABLE, FilterSpec(ranges={S.SPLIT: (0, 1)}))


def test_load_filter_spec(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = FilterSpec(regions=[S.HARD], ranges={S.AUM: (-1.0, 0.0)})
    assert load_filter_spec(spec.to_json()) == spec
    f = tmp_path / "f.json"
    f.write_text(spec.to_json())
    assert load_filter_spec(f) == spec
    m = tmp_path / "x.manifest.json"
    m.write_text(json.dumps({"manifest_version": 1, "filter": {"spec": spec.to_dict()}}))
    assert load_filter_spec(m) == spec
    with pytest.raises(ValueError, match="JSON object or a path"):
        load_filter_spec(str(tmp_path / "missing.json"))


# ---- geometry ------------------------------------------------------------------------------------


def _pnpoly_reference(px: float, py: float, poly: list[tuple[float, float]]) -> bool:
    """W. Randolph Franklin's PNPOLY, one point at a time in pure Python."""
    inside = False
    j = len(poly) - 1
    for i in range(len(poly)):
        xi, yi = poly[i]
        xj, yj = poly[j]
        if (yi > py) != (yj > py) and px < (xj - xi) * (py - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def _winding_reference(px: float, py: float, poly: list[tuple[float, float]]) -> bool:
    """Winding number (Sunday's algorithm): a different method, equal to even-odd for simple polygons."""
    wn = 0
    n = len(poly)
    for i in range(n):
        (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % n]
        cross = (x1 - x0) * (py - y0) - (px - x0) * (y1 - y0)
        if y0 <= py:
            if y1 > py and cross > 0:
                wn += 1
        elif y1 <= py and cross < 0:
            wn -= 1
    return wn != 0


coords = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@settings(max_examples=80, deadline=None)
@given(
    poly=st.lists(st.tuples(coords, coords), min_size=3, max_size=12),
    pts=hnp.arrays(np.float64, st.tuples(st.integers(1, 60), st.just(2)), elements=coords),
)
def test_polygon_matches_pnpoly_reference(poly: list[tuple[float, float]], pts: np.ndarray) -> None:
    # Arbitrary (also self-intersecting) polygons, points anywhere (vertices too, on the boundary).
    pts = np.vstack([pts, np.asarray(poly)])
    got = points_in_polygon(pts[:, 0], pts[:, 1], poly)
    want = [_pnpoly_reference(x, y, poly) for x, y in pts]
    # Points on (or within rounding of) the boundary have no defined side: the bounding-box
    # pre-filter and the reference's rounding may then disagree (e.g. a vertex at 5e-84 puts the
    # origin outside the box, while the reference's crossing rounds to exactly 0 and counts it).
    off = [_distance_to_boundary(x, y, poly) > 1e-9 for x, y in pts]
    assert [g for g, o in zip(got.tolist(), off, strict=True) if o] == [
        w for w, o in zip(want, off, strict=True) if o
    ]
    if MplPath is not None:  # pragma: no cover - depends on the environment
        mpl = MplPath(np.asarray(poly)).contains_points(pts)
        interior = np.asarray(want) == mpl
        assert interior.mean() > 0.9


@settings(max_examples=60, deadline=None)
@given(
    radii=st.lists(st.floats(0.5, 5), min_size=3, max_size=16),
    pts=hnp.arrays(np.float64, st.tuples(st.integers(1, 80), st.just(2)), elements=st.floats(-6, 6)),
)
def test_polygon_matches_winding_number_on_star_polygons(radii: list[float], pts: np.ndarray) -> None:
    """Star-shaped polygons are simple: even-odd and winding number must agree off the boundary."""
    angles = np.linspace(0, 2 * np.pi, len(radii), endpoint=False)
    poly = [(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles, strict=True)]
    got = points_in_polygon(pts[:, 0], pts[:, 1], poly)
    for (x, y), g in zip(pts, got, strict=True):
        if _distance_to_boundary(x, y, poly) > 1e-9:
            assert g == _winding_reference(x, y, poly), (x, y)


def _distance_to_boundary(px: float, py: float, poly: list[tuple[float, float]]) -> float:
    best = math.inf
    for i in range(len(poly)):
        (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % len(poly)]
        dx, dy = x1 - x0, y1 - y0
        t = max(0.0, min(1.0, ((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy)))
        best = min(best, math.hypot(px - x0 - t * dx, py - y0 - t * dy))
    return best


def test_polygon_hand_cases() -> None:
    square = [(0, 0), (2, 0), (2, 2), (0, 2)]
    x = np.array([1.0, 3.0, -1.0, 1.0, np.nan, 1.0])
    y = np.array([1.0, 1.0, 1.0, 2.5, 1.0, np.nan])
    assert points_in_polygon(x, y, square).tolist() == [True, False, False, False, False, False]
    # Closing the ring explicitly changes nothing.
    assert points_in_polygon(x, y, square + [(0, 0)]).tolist() == points_in_polygon(x, y, square).tolist()
    # Concave L: the notch is outside.
    ell = [(0, 0), (3, 0), (3, 1), (1, 1), (1, 3), (0, 3)]
    assert points_in_polygon([0.5, 2.0, 2.0, 0.5], [2.0, 0.5, 2.0, 0.5], ell).tolist() == [True, True, False, True]
    # A bow tie (self-intersecting): both lobes are inside under the even-odd rule.
    bow = [(0, 0), (2, 2), (2, 0), (0, 2)]
    assert points_in_polygon([0.3, 1.7, 1.0], [1.0, 1.0, 1.7], bow).tolist() == [True, True, False]
    # Fewer than 3 vertices select nothing.
    assert not points_in_polygon([0.0], [0.0], [(0, 0), (1, 1)]).any()
    with pytest.raises(ValueError, match=r"shape \(n_vertices, 2\)"):
        points_in_polygon([0.0], [0.0], [1, 2, 3])
    with pytest.raises(ValueError, match="same length"):
        points_in_polygon([0.0, 1.0], [0.0], square)


def test_box() -> None:
    x = np.array([0.0, 1.0, 2.0, np.nan, 1.0])
    y = np.array([0.0, 1.0, 2.0, 1.0, 5.0])
    assert points_in_box(x, y, (1, 2), (0, 2)).tolist() == [False, True, True, False, False]
    assert points_in_box(x, y, (2, 1), (2, 0)).tolist() == [False, True, True, False, False]


# ---- sampling and extremes -------------------------------------------------------------------------


def test_plot_sample_all_rows_when_they_fit() -> None:
    assert plot_sample(5, max_points=5).tolist() == [0, 1, 2, 3, 4]
    mask = np.array([True, False, True, False])
    assert plot_sample(mask, max_points=10).tolist() == [0, 2]
    assert plot_sample(0, max_points=3).tolist() == []


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), max_points=st.integers(0, 500), n_prio=st.integers(0, 300),
       seed=st.integers(0, 5), masked=st.booleans())
def test_plot_sample_properties(n: int, max_points: int, n_prio: int, seed: int, masked: bool) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random(n) < 0.6 if masked else None
    prio = np.zeros(n, dtype=bool)
    prio[rng.choice(n, size=min(n_prio, n), replace=False)] = True
    cand = np.flatnonzero(mask) if mask is not None else np.arange(n)
    rows = plot_sample(mask if mask is not None else n, max_points=max_points, priority=prio, seed=seed)
    assert rows.tolist() == sorted(set(rows.tolist()))  # sorted, unique
    assert set(rows.tolist()) <= set(cand.tolist())
    assert len(rows) == min(max_points, len(cand))
    prio_cand = set(np.flatnonzero(prio).tolist()) & set(cand.tolist())
    if len(prio_cand) <= max_points:
        assert prio_cand <= set(rows.tolist())  # every priority row drawn
    else:
        assert set(rows.tolist()) <= prio_cand  # only priority rows
    again = plot_sample(mask if mask is not None else n, max_points=max_points,
                        priority=np.flatnonzero(prio), seed=seed)  # indices == mask
    np.testing.assert_array_equal(rows, again)


def test_plot_sample_is_roughly_uniform() -> None:
    rows = plot_sample(100_000, max_points=10_000, seed=1)
    counts = np.histogram(rows, bins=10, range=(0, 100_000))[0]
    assert counts.min() > 900 and counts.max() < 1100


def test_extreme_mask_matches_sorting() -> None:
    rng = np.random.default_rng(3)
    t = pd.DataFrame({S.AUM: rng.normal(size=500), "ood_energy": rng.normal(size=500)})
    t.loc[::10, S.AUM] = np.nan
    got = extreme_mask(t, [S.AUM, "ood_energy"], k=7)
    aum = t[S.AUM].to_numpy()
    lowest_aum = set(sorted(np.flatnonzero(~np.isnan(aum)), key=lambda i: aum[i])[:7])
    highest_ood = set(np.argsort(-t["ood_energy"].to_numpy())[:7].tolist())
    assert set(np.flatnonzero(got).tolist()) == lowest_aum | highest_ood
    flipped = extreme_mask(t, {S.AUM: "highest"}, k=3)
    assert set(np.flatnonzero(flipped).tolist()) == set(sorted(np.flatnonzero(~np.isnan(aum)), key=lambda i: -aum[i])[:3])
    # Ties at the cut go to the earlier rows; k larger than the valid rows takes them all.
    tied = pd.DataFrame({S.AUM: [1.0, 0.0, 0.0, 0.0, np.nan]})
    assert extreme_mask(tied, [S.AUM], k=2).tolist() == [False, True, True, False, False]
    assert extreme_mask(tied, [S.AUM], k=10).tolist() == [True, True, True, True, False]
    assert not extreme_mask(tied, ["missing_column"], k=3).any()
    with pytest.raises(ValueError, match="'lowest' or 'highest'"):
        extreme_mask(t, {S.AUM: "low"}, k=1)  # type: ignore[dict-item]


# ---- scale ---------------------------------------------------------------------------------------


def test_filter_and_lasso_are_exact_at_a_million_rows() -> None:
    # Speed is measured in benchmarks/bench_filters.py, not asserted here.
    n = 1_000_000
    rng = np.random.default_rng(0)
    t = pd.DataFrame({
        S.EXAMPLE_ID: np.arange(n),
        S.SPLIT: pd.Series(rng.choice(SPLITS, n), dtype="str"),
        S.LABEL: pd.array(rng.integers(0, 10, n), dtype="Int64"),
        S.REGION: pd.Categorical(rng.choice(REGIONS, n), categories=list(S.REGIONS)),
        S.DIAGNOSIS: pd.Series(rng.choice(DIAGNOSES, n), dtype="str"),
        S.CONFIDENCE: rng.random(n),
        S.UMAP_X: rng.normal(size=n),
        S.UMAP_Y: rng.normal(size=n),
    })
    flags = pd.DataFrame({S.EXAMPLE_ID: np.arange(0, n, 101), FLAG: "mislabeled"})
    spec = FilterSpec(splits=["train"], regions=[S.HARD, S.AMBIGUOUS], diagnoses=["suspect_mislabeled"],
                      ranges={S.CONFIDENCE: (0.0, 0.3)}, flagged="unflagged")
    mask = apply_filter(t, spec, flags=flags)
    expected = ((t[S.SPLIT] == "train") & t[S.REGION].isin([S.HARD, S.AMBIGUOUS])
                & (t[S.DIAGNOSIS] == "suspect_mislabeled") & t[S.CONFIDENCE].between(0, 0.3)
                & (t[S.EXAMPLE_ID] % 101 != 0)).to_numpy()
    np.testing.assert_array_equal(mask, expected)
    theta = np.linspace(0, 2 * np.pi, 300, endpoint=False)
    poly = np.c_[np.cos(theta), np.sin(theta)]
    inside = points_in_polygon(t[S.UMAP_X], t[S.UMAP_Y], poly)
    r = np.hypot(t[S.UMAP_X].to_numpy(), t[S.UMAP_Y].to_numpy())
    sure = (r < 0.99) | (r > 1.0)  # a 300-gon lies between radii cos(pi/300) and 1
    np.testing.assert_array_equal(inside[sure], r[sure] < 0.99)
