"""Pure figure builders and the server-side selection/sampling helpers of the dashboard."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis import schema as S
from analysis.dynamics import RegionThresholds
from dashboard import data as D
from dashboard import figures as FIG
from dashboard import scatter as SC


def _table(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        S.EXAMPLE_ID: np.arange(1000, 1000 + n),
        S.SPLIT: rng.choice(["train", "test", "ood:far"], n),
        S.LABEL_NAME: rng.choice(["cat", "dog"], n),
        S.CONFIDENCE: rng.random(n),
        S.VARIABILITY: rng.random(n) * 0.4,
        S.CORRECTNESS: rng.random(n),
        S.UMAP_X: rng.normal(size=n),
        S.UMAP_Y: rng.normal(size=n),
        S.OOD_ENERGY: rng.normal(size=n),
    })


def test_data_map_spec_carries_each_point_and_the_boundaries_at_the_thresholds() -> None:
    t = _table()
    thr = RegionThresholds(confidence=0.6, variability=0.15)
    spec = SC.data_map_spec(t, thresholds=thr)
    assert spec["ids"] == t[S.EXAMPLE_ID].tolist()
    np.testing.assert_allclose(spec["x"], t[S.VARIABILITY], atol=1e-5)
    np.testing.assert_allclose(spec["y"], t[S.CONFIDENCE], atol=1e-5)
    np.testing.assert_allclose(spec["v"], t[S.CORRECTNESS], atol=1e-4)
    assert spec["text"] == t[S.LABEL_NAME].tolist()
    assert spec["lines"] == [
        {"x0": 0.15, "y0": 0.0, "x1": 0.15, "y1": 1.0},  # variability threshold, full height
        {"x0": 0.0, "y0": 0.6, "x1": 0.15, "y1": 0.6},  # confidence threshold, left of it
    ]
    assert {lb["text"] for lb in spec["labels"]} == {S.EASY, S.HARD, S.AMBIGUOUS}
    assert spec["x_range"][0] == 0.0 and spec["x_range"][1] >= t[S.VARIABILITY].max()
    assert spec["y_range"][0] < 0 and spec["y_range"][1] > 1
    json.dumps(spec, allow_nan=False)


def test_numeric_colour_codes_follow_the_values() -> None:
    values = pd.Series([0.0, 0.25, 0.5, np.nan, 1.0, 0.999], name="score")
    colors = SC.point_colors(values)
    steps = SC.NUMERIC_STEPS
    # independent: the shade index is the value's position in [min, max] times the step count
    expected = [0, steps // 4, steps // 2, -1, steps - 1, int(0.999 * steps)]
    assert colors["c"].tolist() == expected
    assert len(colors["palette"]) == steps
    assert colors["palette"][0] == SC.VIRIDIS[0] and colors["palette"][-1] == SC.VIRIDIS[-1]
    assert colors["legend"]["min"] == 0.0 and colors["legend"]["max"] == 1.0
    constant = SC.point_colors(pd.Series([2.0, 2.0], name="flat"))
    assert constant["c"].tolist() == [0, 0]


def test_heavy_tailed_ood_scores_are_coloured_by_rank() -> None:
    steps = SC.NUMERIC_STEPS
    values = pd.Series([1.0, 2.0, 3.0, 1000.0, np.nan], name=S.OOD_MAHALANOBIS)
    # by hand: percentiles 0, 1/3, 2/3, 1 of the four finite values
    colors = SC.point_colors(values)
    assert colors["c"].tolist() == [0, steps // 3, int(2 / 3 * steps), steps - 1, -1]
    assert colors["legend"]["title"] == f"{S.OOD_MAHALANOBIS} (rank)"
    assert colors["legend"]["mid"] == 2.5 and colors["legend"]["max"] == 1000.0
    # the linear scale puts the three small values in one shade
    assert SC.point_colors(values, scale="linear")["c"].tolist()[:3] == [0, 0, 0]
    # ties share one colour; other columns stay linear
    tied = SC.point_colors(pd.Series([5.0, 5.0, 1.0], name=S.OOD_ENERGY))["c"].tolist()
    assert tied[0] == tied[1] > tied[2] == 0
    assert "mid" not in SC.point_colors(pd.Series([1.0, 2.0], name=S.CONFIDENCE))["legend"]
    with pytest.raises(ValueError, match="`scale`"):
        SC.point_colors(values, scale="log")  # type: ignore[arg-type]


def test_categorical_colour_codes_name_each_point() -> None:
    t = _table()
    spec = SC.data_map_spec(t, color=S.SPLIT)
    items = spec["legend"]["items"]
    assert [it["name"] for it in items] == ["ood:far", "test", "train"]
    names = [items[c]["name"] for c in spec["c"]]
    assert names == t[S.SPLIT].tolist()
    assert all(spec["palette"][c] == items[c]["color"] for c in spec["c"])
    assert spec["v"] is None


def test_density_image_counts_every_row_in_data_coordinates() -> None:
    import base64
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(0.0, 0.1, 5_000), [np.nan, 5.0]])  # left tenth only (+ ignored)
    ys = np.concatenate([rng.uniform(0.5, 1.0, 5_000), [0.5, 0.5]])  # top half only
    img = SC.density_image(xs, ys, x_range=(0.0, 1.0), y_range=(0.0, 1.0), bins=(10, 4))
    assert img is not None
    assert (img["x0"], img["x1"], img["y0"], img["y1"]) == (0.0, 1.0, 0.0, 1.0)
    png = Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1])))
    alpha = np.asarray(png)[..., 3]
    assert alpha.shape == (4, 10)
    # row 0 is the top of the chart: only the top two rows of the first column have points
    assert (alpha[:2, 0] > 0).all() and (alpha[2:, :] == 0).all() and (alpha[:, 1:] == 0).all()
    assert SC.density_image(xs, ys, x_range=(2.0, 3.0), y_range=(0.0, 1.0)) is None


def test_data_map_with_every_row_gets_the_density_image_and_their_range() -> None:
    t = _table(100)
    every_x = np.r_[t[S.VARIABILITY].to_numpy(), 0.9]  # a row beyond the drawn sample's range
    every_y = np.r_[t[S.CONFIDENCE].to_numpy(), 0.5]
    spec = SC.data_map_spec(t, every=(every_x, every_y))
    assert spec["density"] is not None and spec["density"]["x1"] == spec["x_range"][1]
    assert spec["x_range"][1] >= 0.9
    assert SC.data_map_spec(t)["density"] is None  # every row drawn: nothing to shade
    emb = SC.embedding_spec(t, every=(t[S.UMAP_X].to_numpy(), t[S.UMAP_Y].to_numpy()))
    assert emb["density"] is not None and emb["show_ticks"] is False
    lo, hi = emb["x_range"]
    assert lo < t[S.UMAP_X].min() and hi > t[S.UMAP_X].max()


def test_highlight_rings_the_flagged_points_only() -> None:
    t = _table(50)
    hl = np.zeros(50, dtype=bool)
    hl[[3, 7, 11]] = True
    spec = SC.embedding_spec(t, highlight=hl)
    assert spec["flag"] == [3, 7, 11]
    with pytest.raises(ValueError, match="highlight"):
        SC.embedding_spec(t, highlight=hl[:10])


def test_missing_values_and_string_ids_stay_valid_json() -> None:
    t = _table(20)
    t.loc[::3, S.CORRECTNESS] = np.nan
    t.loc[1, S.VARIABILITY] = np.nan
    t[S.EXAMPLE_ID] = [f"ex-{i}" for i in range(20)]
    t[S.DIAGNOSIS] = pd.Series(["clean", None] * 10, dtype="object")
    spec = SC.data_map_spec(t)
    json.dumps(spec, allow_nan=False)
    assert spec["x"][1] is None and spec["v"][0] is None and spec["c"][0] == -1
    assert spec["ids"][:2] == ["ex-0", "ex-1"]
    assert [it["name"] for it in SC.point_colors(t[S.DIAGNOSIS])["legend"]["items"]] == ["(missing)", "clean"]


def test_ids_beyond_double_precision_travel_as_strings() -> None:
    t = _table(3)
    assert SC.data_map_spec(t)["ids"] == t[S.EXAMPLE_ID].tolist()  # small ints stay numbers
    big = np.array([2**60 + 1, 2**60 + 2, 5], dtype=np.int64)  # a double cannot hold 2**60 + 1
    t[S.EXAMPLE_ID] = big
    ids = SC.data_map_spec(t)["ids"]
    assert ids == [str(v) for v in big.tolist()]
    assert [int(v) for v in ids] == big.tolist()  # exact round trip


SVG_NS = {"s": "http://www.w3.org/2000/svg"}


def _svg(text: str) -> Any:
    import xml.etree.ElementTree as ET

    return ET.fromstring(text)  # raises unless well-formed


def test_ood_histogram_shares_bins_and_normalises_per_split() -> None:
    import re

    t = _table(300)
    t.loc[t.index[:5], S.SPLIT] = "<b>&split"  # names are escaped, the SVG stays well-formed
    root = _svg(FIG.ood_histogram_svg(t, S.OOD_ENERGY, bins=20))
    groups = root.findall("s:g", SVG_NS)
    assert len(groups) == t[S.SPLIT].nunique()
    values = t[S.OOD_ENERGY].to_numpy(float)
    edges = np.linspace(values.min(), values.max(), 21)
    for g in groups:
        titles = [r.find("s:title", SVG_NS).text for r in g.findall("s:rect", SVG_NS)]
        name = titles[0].split(": ")[0]
        # independent: the split's own histogram over the shared edges, as fractions of the split
        expected, _ = np.histogram(values[(t[S.SPLIT] == name).to_numpy()], bins=edges)
        expected = expected / expected.sum()
        got = [float(re.search(r": ([\d.]+)% of", x).group(1)) / 100 for x in titles]
        np.testing.assert_allclose(got, expected[expected > 0], atol=5e-5)
        heights = [float(r.get("height")) for r in g.findall("s:rect", SVG_NS)]
        np.testing.assert_allclose(np.asarray(heights) / max(heights), np.asarray(got) / max(got), atol=0.02)
    assert "<b>&split" not in FIG.ood_histogram_svg(t, S.OOD_ENERGY) and "&lt;b&gt;&amp;split" in FIG.ood_histogram_svg(t, S.OOD_ENERGY)
    with pytest.raises(ValueError, match="score column"):
        FIG.ood_histogram_svg(t, "ood_missing")


def test_ood_histogram_draws_the_cut_off_where_it_lies() -> None:
    t = _table(300)
    values = t[S.OOD_ENERGY].to_numpy(float)
    lo, hi = values.min(), values.max()

    def line(cutoff: float | None) -> list:
        return [e for e in _svg(FIG.ood_histogram_svg(t, S.OOD_ENERGY, cutoff=cutoff)).iter(f"{{{SVG_NS['s']}}}line")
                if e.get("class") == "cutoff"]

    xs = [float(line(lo + f * (hi - lo))[0].get("x1")) for f in (0.25, 0.5, 0.75)]
    assert xs[0] < xs[1] < xs[2] and xs[1] == pytest.approx((xs[0] + xs[2]) / 2, abs=0.15)  # linear in the score
    left = float(line(lo)[0].get("x1"))
    bars = _svg(FIG.ood_histogram_svg(t, S.OOD_ENERGY)).findall("s:g/s:rect", SVG_NS)
    assert left == pytest.approx(min(float(r.get("x")) for r in bars), abs=0.15)  # the first bin's edge
    (cut,) = line(lo + 0.5 * (hi - lo))
    assert "suspect_ood cut-off" in cut.find("s:title", SVG_NS).text
    bottom = max(float(r.get("y")) + float(r.get("height")) for r in bars)
    assert float(cut.get("y2")) == pytest.approx(bottom, abs=0.15)
    assert line(None) == [] and line(hi + (hi - lo)) == [] and line(float("nan")) == []


def test_roc_and_pr_svgs_plot_the_given_points() -> None:
    curves = {"ood:far": {"fpr": [0, 0.1, 1], "tpr": [0, 0.9, 1], "auroc": 0.95,
                          "precision": [1, 0.9, 0.5], "recall": [0, 0.8, 1], "aupr_out": 0.9}}
    for svg, xs, ys, label in (
        (FIG.roc_svg(curves, width=420, height=340), [0, 0.1, 1], [0, 0.9, 1], "ood:far (AUROC 0.950)"),
        (FIG.pr_svg(curves, width=420, height=340), [0, 0.8, 1], [1, 0.9, 0.5], "ood:far (AUPR-out 0.900)"),
    ):
        root = _svg(svg)
        line = root.find("s:polyline", SVG_NS)
        assert line.find("s:title", SVG_NS).text == label
        assert label in svg  # the legend
        pts = np.array([[float(v) for v in p.split(",")] for p in line.get("points").split()])
        # the plot area is x in [48, 48 + 358] for [0, 1], y in [12, 12 + 290] for [1.02, 0]
        np.testing.assert_allclose(pts[:, 0], 48 + np.asarray(xs) * 358, atol=0.06)
        np.testing.assert_allclose(pts[:, 1], 12 + (1.02 - np.asarray(ys)) / 1.02 * 290, atol=0.06)
    assert _svg(FIG.roc_svg(curves)).find("s:line[s:title]", SVG_NS) is not None  # chance diagonal


def test_svgs_survive_degenerate_input() -> None:
    t = pd.DataFrame({S.SPLIT: ["train", "test"], "ood_<img src=x onerror=alert(1)>": [1e17, 1e17]})
    svg = FIG.ood_histogram_svg(t, "ood_<img src=x onerror=alert(1)>")  # a constant, huge score
    _svg(svg)
    assert "<img" not in svg  # the column name is text, not markup
    _svg(FIG.ood_histogram_svg(pd.DataFrame({S.SPLIT: ["a"], "ood_x": [np.nan]}), "ood_x"))
    _svg(FIG.ood_histogram_svg(pd.DataFrame({S.SPLIT: ["a", "b"], "ood_x": [-1e308, 1e308]}), "ood_x"))
    _svg(FIG.trajectory_svg(pd.DataFrame({S.EPOCH: [np.nan, np.nan], S.GOLD_PROB: [0.1, 0.2]})))
    _svg(FIG.trajectory_svg(pd.DataFrame({S.EPOCH: [3], S.GOLD_PROB: [0.4]})))  # one epoch
    _svg(FIG.roc_svg({}))
    _svg(FIG.roc_svg({"a": {"fpr": [], "tpr": [], "auroc": None}}))


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert FIG.nice_ticks(0.0, 1.0, 5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert FIG.nice_ticks(-3.2, 7.9, 5) == [-2.0, 0.0, 2.0, 4.0, 6.0]
    assert FIG.nice_ticks(0.013, 0.0191, 3) == [0.014, 0.016, 0.018]
    assert FIG.nice_ticks(2.0, 2.0) == [2.0]


def test_trajectory_svg_draws_each_epoch_in_order_on_the_probability_scale() -> None:
    traj = pd.DataFrame({S.EPOCH: [2, 0, 1, 3], S.GOLD_PROB: [0.9, 0.1, 0.5, np.nan]})
    svg = FIG.trajectory_svg(traj, confidence=0.5, width=420, height=240)
    root = _svg(svg)
    ns = SVG_NS
    circles = root.findall("s:circle", ns)
    titles = [c.find("s:title", ns).text for c in circles]
    assert titles == ["epoch 0: p(gold) 0.100", "epoch 1: p(gold) 0.500", "epoch 2: p(gold) 0.900"]  # NaN left out
    cx = [float(c.get("cx")) for c in circles]
    cy = [float(c.get("cy")) for c in circles]
    assert cx == sorted(cx) and cx[0] == 44.0  # epochs left to right from the plot's left edge
    # p(gold) is linear in y, upward: equal steps in p give equal steps in pixels
    assert cy[0] > cy[1] > cy[2] and abs((cy[0] - cy[1]) - (cy[1] - cy[2])) < 0.2
    pts = [tuple(map(float, p.split(","))) for p in root.find("s:polyline", ns).get("points").split()]
    assert pts == list(zip(cx, cy, strict=True))
    assert "confidence 0.50" in svg
    assert "confidence" not in FIG.trajectory_svg(traj)  # no mean line without a confidence


def test_column_choices_skip_payloads() -> None:
    t = _table(10)
    t[S.IMAGE] = [b"\x89PNG"] * 10
    t[S.TEXT] = ["x"] * 10
    choices = FIG.column_choices(t)
    assert S.IMAGE not in choices and S.TEXT not in choices and S.EXAMPLE_ID not in choices
    assert S.CORRECTNESS in choices and S.SPLIT in choices


# ---- sampling and selection over every row ---------------------------------------------------------


def _ctx(n: int, flagged: np.ndarray | None = None) -> D.RunContext:
    t = _table(n)
    ctx = D.RunContext(run_dir=D.Path("."), key=("k", n, 0), table=t, mask=np.ones(n, dtype=bool))
    ctx._flagged = flagged if flagged is not None else np.zeros(n, dtype=bool)
    return ctx


def test_plot_rows_is_bounded_and_keeps_flagged_and_extreme_rows() -> None:
    n = 20_000
    flagged = np.zeros(n, dtype=bool)
    flagged[[5, 19_999, 12_345]] = True
    ctx = _ctx(n, flagged)
    rows = D.plot_points(ctx, x=S.VARIABILITY, y=S.CONFIDENCE, max_points=1_000,
                         extreme_columns=(S.CONFIDENCE,)).rows
    assert len(rows) == 1_000
    assert {5, 19_999, 12_345} <= set(rows.tolist())
    lowest = np.argsort(ctx.table[S.CONFIDENCE].to_numpy())[: D.EXTREME_K]
    assert set(lowest.tolist()) <= set(rows.tolist())
    # the filter bounds the candidates
    ctx.mask = np.zeros(n, dtype=bool)
    ctx.mask[:100] = True
    rows = D.plot_points(ctx, x=S.VARIABILITY, y=S.CONFIDENCE, max_points=1_000).rows
    assert set(rows.tolist()) == set(range(100))


def test_lasso_is_applied_to_every_filtered_row_not_only_the_drawn_ones() -> None:
    n = 5_000
    ctx = _ctx(n)
    ctx.mask[::2] = False  # the filter keeps odd rows
    lasso = {"x": [0.0, 0.2, 0.2, 0.0], "y": [0.0, 0.0, 0.5, 0.5]}
    mask, how = D.selection_mask(ctx, {"lasso": [lasso], "box": [], "points": []},
                                 x=S.VARIABILITY, y=S.CONFIDENCE)
    v, c = ctx.table[S.VARIABILITY].to_numpy(), ctx.table[S.CONFIDENCE].to_numpy()
    expected = (v > 0) & (v < 0.2) & (c > 0) & (c < 0.5) & ctx.mask
    assert how == "lasso"
    np.testing.assert_array_equal(mask, expected)
    box = {"x": [0.3, 0.1], "y": [0.9, 0.4]}
    mask, how = D.selection_mask(ctx, {"lasso": [], "box": [box], "points": []},
                                 x=S.VARIABILITY, y=S.CONFIDENCE)
    expected = (v >= 0.1) & (v <= 0.3) & (c >= 0.4) & (c <= 0.9) & ctx.mask
    assert how == "box"
    np.testing.assert_array_equal(mask, expected)


def test_clicked_points_resolve_by_customdata_ids() -> None:
    ctx = _ctx(100)
    ids = ctx.table[S.EXAMPLE_ID].to_numpy()
    sel = {"points": [{"customdata": int(ids[4])}, {"customdata": [int(ids[9])]}], "box": [], "lasso": []}
    mask, how = D.selection_mask(ctx, sel, x=S.VARIABILITY, y=S.CONFIDENCE)
    assert how == "points"
    assert np.flatnonzero(mask).tolist() == [4, 9]
    mask, how = D.selection_mask(ctx, None, x=S.VARIABILITY, y=S.CONFIDENCE)
    assert how == "" and not mask.any()
