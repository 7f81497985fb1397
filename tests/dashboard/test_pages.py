"""Page logic with Streamlit's AppTest: every page, filters, thresholds, flags, exports, errors."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis import schema as S
from analysis.dynamics import RegionThresholds, assign_regions
from analysis.filters import FilterSpec, apply_filter
from analysis.flags import FlagJournal
from analysis.pipeline import AnalyzeOptions, analyze_run
from analysis.synthetic import make_synthetic_run
from dashboard import state as K
from dashboard.widgets import selection_table_key
from tests.dashboard.runs import make_image_run

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PAGES = Path(__file__).resolve().parents[2] / "dashboard" / "app_pages"
PAGE_FILES = ("data_map.py", "embeddings.py", "ood.py", "review.py", "queue.py", "export.py")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_run(tmp_path_factory.mktemp("pages") / "run", n_examples=600, n_eval=100)


@pytest.fixture
def fresh_run(run: Path, tmp_path: Path) -> Path:
    """A private copy (for tests that write flags or exports)."""
    dest = tmp_path / "run"
    shutil.copytree(run, dest)
    return dest


@pytest.fixture(scope="module")
def run_without_ood(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_synthetic_run(tmp_path_factory.mktemp("noood") / "run", n_examples=300)
    analyze_run(run, AnalyzeOptions(ood=False))
    return run


def app_for(run_dir: Path | str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("DATAMAP_RUN_DIR", str(run_dir))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    return at


def goto(at: AppTest, page: str) -> AppTest:
    return at.switch_page(str(PAGES / page)).run()


def chart_spec(at: AppTest) -> dict:
    """The spec the page sent to its scatter chart (``dashboard/scatter.js``)."""
    import json

    charts = [c for c in at.get("bidi_component") if c.proto.component_name == "datamap_scatter"]
    assert len(charts) == 1, len(charts)
    return json.loads(charts[0].proto.json)


def shown(at: AppTest) -> int:
    return int(at.sidebar.metric[0].value.replace(",", ""))


@pytest.fixture
def at(run: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    yield app_for(run, monkeypatch)


@pytest.mark.parametrize("page", PAGE_FILES)
def test_every_page_runs_without_exception(at: AppTest, page: str) -> None:
    goto(at, page)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value


def test_sidebar_filter_changes_the_counts(at: AppTest, run: Path) -> None:
    table = pd.read_parquet(run / S.TABLE_FILE)
    assert shown(at) == len(table)
    at.sidebar.multiselect(key=K.W_SPLITS).set_value(["train"]).run()
    assert shown(at) == int((table[S.SPLIT] == "train").sum())
    assert "split ∈ {train}" in " ".join(c.value for c in at.sidebar.caption)
    at.sidebar.text_input(key=K.W_SEARCH).set_value("12").run()
    expected = apply_filter(table, FilterSpec(splits=["train"], search="12"))
    assert shown(at) == int(expected.sum())
    at.sidebar.button[0].click().run()  # reset
    assert shown(at) == len(table)
    assert not at.exception


def test_data_map_draws_a_sample_over_a_density_image_and_says_so(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64
    import io
    import json

    from PIL import Image

    from dashboard import data as D

    monkeypatch.setattr(D, "MAX_PLOT_POINTS", 200)
    at = app_for(run, monkeypatch)
    table = pd.read_parquet(run / S.TABLE_FILE)
    n_drawable = int((np.isfinite(table[S.CONFIDENCE]) & np.isfinite(table[S.VARIABILITY])).sum())
    caption = next(c.value for c in at.caption if c.value.startswith("Drawing"))
    assert f"Drawing 200 of {n_drawable:,} filtered examples" in caption
    assert f"shows where all {n_drawable:,} lie" in caption
    spec = chart_spec(at)
    assert len(spec["x"]) == len(spec["ids"]) == 200
    image = spec["density"]
    assert (image["x0"], image["x1"]) == tuple(spec["x_range"])
    png = Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))
    assert np.asarray(png)[..., 3].any()  # every row is shaded somewhere
    # the drawn points are rows of the table, at their own coordinates
    drawn = table.set_index(S.EXAMPLE_ID).loc[spec["ids"]]
    np.testing.assert_allclose(spec["x"], drawn[S.VARIABILITY], atol=1e-5)
    np.testing.assert_allclose(spec["y"], drawn[S.CONFIDENCE], atol=1e-5)
    json.dumps(spec, allow_nan=False)  # the browser's JSON has no NaN
    at.sidebar.multiselect(key=K.W_SPLITS).set_value(["train"]).run()  # still sampled, still shaded
    spec = chart_spec(at)
    assert spec["density"] is not None
    assert set(table.set_index(S.EXAMPLE_ID).loc[spec["ids"], S.SPLIT]) == {"train"}
    assert not at.exception


def test_region_thresholds_recompute_regions(at: AppTest, run: Path) -> None:
    table = pd.read_parquet(run / S.TABLE_FILE)
    # the expander renders its sliders only while open
    assert not [s for s in at.sidebar.slider if s.key == K.W_VAR_THRESHOLD]
    at.session_state[K.W_EXPAND_THRESHOLDS] = True
    at.run()
    at.sidebar.slider(key=K.W_VAR_THRESHOLD).set_value(0.1).run()
    at.sidebar.multiselect(key=K.W_REGIONS).set_value([S.AMBIGUOUS]).run()
    regions = assign_regions(table[S.CONFIDENCE].to_numpy(float), table[S.VARIABILITY].to_numpy(float),
                             RegionThresholds(confidence=0.5, variability=0.1))
    n_ambiguous = int((regions == S.AMBIGUOUS).sum())
    assert shown(at) == n_ambiguous
    # closed again: the sliders are gone, the threshold they set still applies
    at.session_state[K.W_EXPAND_THRESHOLDS] = False
    at.run()
    assert not [s for s in at.sidebar.slider if s.key == K.W_VAR_THRESHOLD]
    assert shown(at) == n_ambiguous
    at.session_state[K.W_EXPAND_THRESHOLDS] = True
    at.run()
    assert at.sidebar.slider(key=K.W_VAR_THRESHOLD).value == 0.1
    assert not at.exception


def _reference_quantile(table: pd.DataFrame, info: dict, score: np.ndarray, q: float) -> float:
    # the held-out in-distribution rows (the run's 100 evaluation rows) set the cut-offs
    assert info["calibrated_on"] == "held-out" and "train" not in info["calibration_splits"]
    ref = table[S.SPLIT].isin(info["calibration_splits"]).to_numpy() & ~table[S.IS_OOD].fillna(False).to_numpy(bool)
    s = np.sort(score[ref & np.isfinite(score)])
    return float(s[min(math.ceil((len(s) + 1) * q - 1e-9), len(s)) - 1])  # the conformal order statistic


def test_diagnosis_follows_the_region_thresholds(at: AppTest, run: Path) -> None:
    import json

    table = pd.read_parquet(run / S.TABLE_FILE)
    info = json.loads((run / S.OOD_EVAL_FILE).read_text())["diagnosis"]
    at.sidebar.multiselect(key=K.W_DIAGNOSES).set_value(["clean"]).run()
    stored = int((table[S.DIAGNOSIS] == "clean").sum())
    assert shown(at) == stored  # at the analysis' thresholds: the stored diagnosis
    at.session_state[K.W_EXPAND_THRESHOLDS] = True
    at.run()
    at.sidebar.slider(key=K.W_CONF_THRESHOLD).set_value(0.6).run()
    # by hand: easy-to-learn at the new thresholds, not a label issue, and the score not beyond
    # the learned_ood_quantile of the in-distribution reference rows
    regions = assign_regions(table[S.CONFIDENCE].to_numpy(float), table[S.VARIABILITY].to_numpy(float),
                             RegionThresholds(confidence=0.6, variability=0.2))
    score = table[info["score_column"]].to_numpy(float)
    t_easy = _reference_quantile(table, info, score, info["learned_ood_quantile"])
    issue = table[S.LABEL_ISSUE].to_numpy(bool)
    expected = int(((regions == S.EASY) & ~issue & ~(score > t_easy)).sum())
    assert expected < stored
    assert shown(at) == expected
    # the mislabeling suspects are the run's label issues: the region sliders leave them alone
    at.sidebar.multiselect(key=K.W_DIAGNOSES).set_value(["suspect_mislabeled"]).run()
    assert shown(at) == int((issue & ~(score > t_easy)).sum())
    assert not at.exception


def test_diagnosis_ood_quantile_is_adjustable(at: AppTest, run: Path) -> None:
    import json

    table = pd.read_parquet(run / S.TABLE_FILE)
    info = json.loads((run / S.OOD_EVAL_FILE).read_text())["diagnosis"]
    at.session_state[K.W_EXPAND_THRESHOLDS] = True
    at.run()
    slider = at.sidebar.slider(key=K.W_OOD_QUANTILE)
    assert slider.value == pytest.approx(info["ood_quantile"])  # starts where the analysis was
    slider.set_value(0.5).run()
    at.sidebar.multiselect(key=K.W_DIAGNOSES).set_value(["suspect_ood"]).run()
    # by hand (analysis.diagnosis' rule with label issues), t at the median of the reference rows
    score = table[info["score_column"]].to_numpy(float)
    t = _reference_quantile(table, info, score, 0.5)
    t_easy = _reference_quantile(table, info, score, info["learned_ood_quantile"])
    region = table[S.REGION].astype(str).to_numpy()
    dyn = region != S.NO_DYNAMICS
    issue = table[S.LABEL_ISSUE].to_numpy(bool) & dyn
    beyond, beyond_easy = score > t, score > t_easy
    expected = int(((issue & beyond_easy) | (~issue & (region == S.HARD) & beyond)
                    | (~issue & dyn & beyond_easy) | (~dyn & beyond)).sum())
    assert expected > int((table[S.DIAGNOSIS] == "suspect_ood").sum())  # more than at 0.95
    assert shown(at) == expected
    assert not at.exception


def test_ood_page_says_where_the_diagnosis_cut_off_comes_from(at: AppTest, run: Path) -> None:
    import json

    table = pd.read_parquet(run / S.TABLE_FILE)
    info = json.loads((run / S.OOD_EVAL_FILE).read_text())["diagnosis"]
    goto(at, "ood.py")
    score = table[info["score_column"]].to_numpy(float)
    n_test = int((table[S.SPLIT] == "test").sum())

    def cutoff_caption() -> str:
        found = [c.value for c in at.caption if "suspect_ood above" in c.value]
        assert len(found) == 1, [c.value for c in at.caption]
        return found[0]

    text = cutoff_caption()
    assert f"above {_reference_quantile(table, info, score, 0.95):.4g} on" in text
    at.selectbox(key=K.W_OOD_SCORER).set_value(info["score_column"]).run()
    assert "(the dashed line)" in cutoff_caption()
    at.selectbox(key=K.W_OOD_SCORER).set_value(S.OOD_MSP).run()
    assert "(not the score shown)" in cutoff_caption()
    assert f"the 0.95 quantile of the {n_test} held-out in-distribution rows (test)" in text
    assert "at most 5.0% of new in-distribution data" in text
    at.session_state[K.W_EXPAND_THRESHOLDS] = True
    at.run()
    at.sidebar.slider(key=K.W_OOD_QUANTILE).set_value(0.8).run()
    text = cutoff_caption()
    assert f"above {_reference_quantile(table, info, score, 0.8):.4g}" in text and "0.8 quantile" in text
    assert not at.warning and not at.exception


def test_ood_page_warns_when_no_held_out_rows_set_the_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    run = make_synthetic_run(tmp_path / "run", n_examples=300, n_eval=30)  # 30 test rows: too few
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analyze_run(run, AnalyzeOptions(extra={"projection": "pca"}))
    at = app_for(run, monkeypatch)
    goto(at, "ood.py")
    assert not at.exception
    assert any("in-distribution rows (test, train), training rows included." in c.value for c in at.caption)
    assert len(at.warning) == 1  # the text is markdown-escaped (it comes from the run's files)
    assert "30 held-out in-distribution rows (fewer than 50)" in at.warning[0].value.replace("\\", "")


def test_data_map_shows_the_estimated_label_noise(at: AppTest, run: Path) -> None:
    from analysis.noise import estimate_label_noise

    goto(at, "data_map.py")
    est = estimate_label_noise(pd.read_parquet(run / S.TABLE_FILE))
    labels = [e.label for e in at.expander]
    assert f"Estimated label noise: {est.rate:.1%} of {sum(est.n_per_class.values()):,} training labels" in labels
    assert any("cut-off chosen from this run" in c.value for c in at.caption)
    assert not at.exception


def test_data_map_warns_when_the_noise_rate_is_unstable(fresh_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    path = fresh_run / S.OOD_EVAL_FILE
    ev = json.loads(path.read_text())
    again = ev["diagnosis"]["label_issues"]["resampled"]
    at = app_for(fresh_run, monkeypatch)
    goto(at, "data_map.py")
    caption = f"the mixture flags {again['low']:.1%}-{again['high']:.1%} of the rows"
    assert any(caption in c.value for c in at.caption) and not at.warning  # this run's split is clear
    # the same run recorded as unstable (as on the suite's sentiment runs): the page says so
    again.update(low=0.02, high=0.24, stable=False)
    ev["diagnosis"]["label_issues"]["count_rule"] = "the median of the resampled rates, 16.8%"
    path.write_text(json.dumps(ev))
    at = app_for(fresh_run, monkeypatch)
    goto(at, "data_map.py")
    assert len(at.warning) == 1 and "unstable on this run (2.0%-24.0% across resamples)" in at.warning[0].value
    assert "; it is the median of the resampled rates, 16.8%." in at.warning[0].value
    assert not at.exception


def test_metric_ranges_apply_while_their_expander_is_closed_and_reset_clears_them(
    at: AppTest, run: Path
) -> None:
    table = pd.read_parquet(run / S.TABLE_FILE)
    key = K.W_RANGE_PREFIX + S.CONFIDENCE
    assert not [s for s in at.sidebar.slider if s.key == key]
    at.session_state[K.W_EXPAND_RANGES] = True
    at.run()
    lo, hi = at.sidebar.slider(key=key).value
    at.sidebar.slider(key=key).set_value((lo, 0.5)).run()
    conf = table[S.CONFIDENCE].to_numpy(float)
    expected = int(apply_filter(table, FilterSpec(ranges={S.CONFIDENCE: (lo, 0.5)})).sum())
    assert shown(at) == expected < len(table)
    at.session_state[K.W_EXPAND_RANGES] = False
    at.run()
    assert not [s for s in at.sidebar.slider if s.key == key]
    assert shown(at) == expected
    at.session_state[K.W_EXPAND_RANGES] = True
    at.run()
    assert at.sidebar.slider(key=key).value == (lo, 0.5)
    at.session_state[K.W_EXPAND_RANGES] = False
    at.run()
    at.sidebar.button[0].click().run()  # reset, with the expander closed
    assert shown(at) == len(table)
    at.session_state[K.W_EXPAND_RANGES] = True
    at.run()
    assert at.sidebar.slider(key=key).value == (lo, hi)
    assert np.isfinite(conf).any() and not at.exception


def test_review_flag_is_journaled_and_shown(fresh_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_for(fresh_run, monkeypatch)
    goto(at, "review.py")
    table = pd.read_parquet(fresh_run / S.TABLE_FILE)
    suspects = table[table[S.DIAGNOSIS].astype(str) == "suspect_mislabeled"].sort_values(S.AUM, kind="stable")
    first = suspects[S.EXAMPLE_ID].iloc[0]
    at.session_state[K.W_REVIEW_TABLE] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert any(f"Example `{first}`" in m.value for m in at.markdown)
    flag_box = next(s for s in at.selectbox if s.label == "flag")
    flag_box.set_value("mislabeled")
    next(t for t in at.text_input if t.label == "note").set_value("wrong label")
    next(b for b in at.button if b.label == "Save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    latest = FlagJournal(fresh_run).latest()
    assert latest[S.EXAMPLE_ID].tolist() == [first]
    assert latest["flag"].tolist() == ["mislabeled"] and latest["note"].tolist() == ["wrong label"]
    # the flag filter sees it on every page
    at.sidebar.radio(key=K.W_FLAGGED).set_value("flagged").run()
    assert shown(at) == 1
    goto(at, "data_map.py")
    assert shown(at) == 1 and not at.exception


def test_review_bulk_flag_needs_confirmation_and_undoes(fresh_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_for(fresh_run, monkeypatch)
    goto(at, "review.py")
    table = pd.read_parquet(fresh_run / S.TABLE_FILE)
    listed = table[table[S.DIAGNOSIS].astype(str) == "suspect_mislabeled"]
    assert len(listed) > 0
    next(s for s in at.selectbox if s.key == "review_bulk_kind").set_value("flag").run()
    next(s for s in at.selectbox if s.key == "review_bulk_flag").set_value("ood").run()
    next(b for b in at.button if b.label.startswith("Apply to")).click().run()
    assert FlagJournal(fresh_run).count() == 0  # nothing written before the confirmation
    confirm = next(b for b in at.button if b.label.startswith("Confirm"))
    assert confirm.label == f"Confirm: {len(listed):,} examples"
    confirm.click().run()
    assert not at.exception, [e.value for e in at.exception]
    latest = FlagJournal(fresh_run).latest()
    assert sorted(latest[S.EXAMPLE_ID].tolist()) == sorted(listed[S.EXAMPLE_ID].tolist())
    assert set(latest["flag"]) == {"ood"}
    next(b for b in at.button if b.label.startswith("Undo the last bulk action")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    journal = FlagJournal(fresh_run)
    assert journal.count() == 2 * len(listed) and journal.latest()["flag"].isna().all()
    assert not any(b.label.startswith("Undo") for b in at.button)


def test_queue_saves_each_decision_and_moves_on(fresh_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_for(fresh_run, monkeypatch)
    goto(at, "queue.py")
    assert not at.exception, [e.value for e in at.exception]
    table = pd.read_parquet(fresh_run / S.TABLE_FILE)
    suspects = table[table[S.DIAGNOSIS].astype(str) == "suspect_mislabeled"]
    order = suspects.sort_values(S.AUM, kind="stable")[S.EXAMPLE_ID].tolist()
    assert len(order) >= 4

    def press(key: str) -> None:
        next(b for b in at.button if b.key == key).click().run()
        assert not at.exception, [e.value for e in at.exception]

    assert any(f"Example 1 of {len(order):,}" in m.value for m in at.markdown)
    press("queue_1")  # mislabeled
    press("queue_next")  # skip
    press("queue_A")  # accept the suggested label
    press("queue_prev")
    press("queue_4")  # keep: overrides nothing of the 2nd decision's example (it is the 3rd)
    latest = FlagJournal(fresh_run).latest().set_index(S.EXAMPLE_ID)
    assert latest.loc[order[0], "flag"] == "mislabeled"
    assert order[1] not in latest.index
    assert latest.loc[order[2], "new_label"] == int(suspects.set_index(S.EXAMPLE_ID).loc[order[2], S.FINAL_PRED])
    assert latest.loc[order[2], "flag"] == "keep"
    assert any(f"Example 4 of {len(order):,}" in m.value for m in at.markdown)


def test_gallery_pages_on_the_server_and_its_picks_feed_a_bulk_action(
    fresh_run: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dashboard import gallery

    at = app_for(fresh_run, monkeypatch)
    goto(at, "review.py")
    at.segmented_control(key=K.W_VIEW_PREFIX + "review").set_value("gallery").run()
    assert not at.exception, [e.value for e in at.exception]
    table = pd.read_parquet(fresh_run / S.TABLE_FILE)
    suspects = table[table[S.DIAGNOSIS].astype(str) == "suspect_mislabeled"]
    order = suspects.sort_values(S.AUM, kind="stable")[S.EXAMPLE_ID].tolist()
    boxes = [c for c in at.checkbox if c.key.startswith("review_gallery_box_")]
    assert [c.key for c in boxes] == [f"review_gallery_box_{i}" for i in order[:gallery.PAGE_SIZE]]
    assert len(at.image) == min(gallery.PAGE_SIZE, len(order))  # only this page's thumbnails
    assert boxes[0].label.startswith(f"{order[0]} · ")  # id · given→suggested · metric
    next(b for b in at.button if b.key == "review_gallery_next").click().run()
    boxes = [c for c in at.checkbox if c.key.startswith("review_gallery_box_")]
    assert boxes[0].key == f"review_gallery_box_{order[gallery.PAGE_SIZE]}"
    # pick two tiles on this page, then flag just those
    boxes[0].check().run()
    next(c for c in at.checkbox if c.key == boxes[3].key).check().run()
    picked = [order[gallery.PAGE_SIZE], order[gallery.PAGE_SIZE + 3]]
    assert any("**2 picked**" in m.value for m in at.markdown)
    next(s for s in at.selectbox if s.key == "review_gallery_bulk_kind").set_value("flag").run()
    next(s for s in at.selectbox if s.key == "review_gallery_bulk_flag").set_value("keep").run()
    next(b for b in at.button if b.key == "review_gallery_bulk_prepare").click().run()
    next(b for b in at.button if b.label == "Confirm: 2 examples").click().run()
    assert not at.exception, [e.value for e in at.exception]
    latest = FlagJournal(fresh_run).latest()
    assert sorted(latest[S.EXAMPLE_ID].tolist()) == sorted(picked) and set(latest["flag"]) == {"keep"}


def test_review_ranks_ood_suspects_by_the_diagnosis_score(at: AppTest, run: Path) -> None:
    import json

    used = json.loads((run / S.OOD_EVAL_FILE).read_text())["diagnosis"]["score_column"]
    goto(at, "review.py")
    at.radio(key=K.W_REVIEW_KIND).set_value("suspected OOD").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Ranked by `{used}` (highest first)" in c.value for c in at.caption)


def test_exact_id_lookup_opens_that_example(at: AppTest, run: Path) -> None:
    table = pd.read_parquet(run / S.TABLE_FILE)
    ids = table[S.EXAMPLE_ID].astype(str)
    # an id that is also a substring of other ids: the search finds many, the lookup one
    target = next(i for i in ids if len(i) >= 2 and ids.str.contains(i, regex=False).sum() > 1)
    goto(at, "review.py")
    at.sidebar.text_input(key=K.W_SEARCH).set_value(target).run()
    assert shown(at) == int(ids.str.contains(target, regex=False).sum()) > 1
    at.sidebar.button(key="w_open_exact_id").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Data map"
    assert any(f"Example `{target}`" in m.value for m in at.markdown)
    assert chart_spec(at)["marked"]["id"] == int(target)


def test_export_writes_the_filtered_rows(fresh_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_for(fresh_run, monkeypatch)
    at.sidebar.multiselect(key=K.W_SPLITS).set_value(["test", "ood:far"]).run()
    goto(at, "export.py")
    at.radio(key=K.W_EXPORT_FORMAT).set_value("parquet")
    next(b for b in at.button if b.label == "Prepare export").click().run()
    assert not at.exception and not at.error
    files = list((fresh_run / S.EXPORTS_DIR).glob("*.parquet"))
    assert len(files) == 1
    got = pd.read_parquet(files[0])
    table = pd.read_parquet(fresh_run / S.TABLE_FILE)
    expected = table.loc[table[S.SPLIT].isin(["test", "ood:far"]), S.EXAMPLE_ID]
    assert sorted(got[S.EXAMPLE_ID].tolist()) == sorted(expected.tolist())
    assert list((fresh_run / S.EXPORTS_DIR).glob("*.manifest.json"))
    assert at.session_state[K.EXPORT_RESULT].manifest["rows"]["exported"] == len(expected)


def test_selection_scope_exports_the_selected_ids(fresh_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard.data import Selection

    at = app_for(fresh_run, monkeypatch)
    ids = pd.read_parquet(fresh_run / S.TABLE_FILE)[S.EXAMPLE_ID].to_numpy()[[1, 5, 8]]
    at.session_state[K.SELECTION] = {"data_map": Selection(ids=ids, how="lasso")}
    at.session_state[K.LAST_SELECTION_PAGE] = "data_map"
    goto(at, "export.py")
    scope = at.radio(key=K.W_EXPORT_SCOPE)
    scope.set_value(next(o for o in scope.options if o.startswith("current selection")))
    next(b for b in at.button if b.label == "Prepare export").click().run()
    got = pd.read_csv(next((fresh_run / S.EXPORTS_DIR).glob("*.csv")))
    assert sorted(got[S.EXAMPLE_ID].tolist()) == sorted(ids.tolist())


def test_curated_export_drops_suspects(fresh_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_for(fresh_run, monkeypatch)
    goto(at, "export.py")
    at.checkbox(key=K.W_EXPORT_CURATED).check()
    next(b for b in at.button if b.label == "Prepare export").click().run()
    got = pd.read_csv(next((fresh_run / S.EXPORTS_DIR).glob("*.csv")))
    assert set(got[S.SPLIT]) == {"train"}
    assert not set(got[S.DIAGNOSIS]) & {"suspect_mislabeled", "suspect_ood"}


# ---- errors ---------------------------------------------------------------------------------------


def _all_pages_show_error(at: AppTest, match: str) -> None:
    for page in PAGE_FILES:
        goto(at, page)
        assert not at.exception, [e.value for e in at.exception]
        assert at.error and match in at.error[0].value, (page, [e.value for e in at.error])


def test_missing_run_dir_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_for(tmp_path / "nope", monkeypatch)
    _all_pages_show_error(at, "does not exist")


def test_corrupt_table_is_a_clear_error(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "run"
    shutil.copytree(run, bad)
    (bad / S.TABLE_FILE).write_bytes(b"not a parquet file")
    at = app_for(bad, monkeypatch)
    _all_pages_show_error(at, "corrupt")


def test_run_without_ood_or_features_keeps_the_rest_working(
    run_without_ood: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app_for(run_without_ood, monkeypatch)
    assert not at.exception and not at.error  # the data map works
    goto(at, "ood.py")
    assert not at.exception and "no OOD scores" in at.error[0].value
    goto(at, "embeddings.py")
    assert not at.exception and not at.error
    assert "There is no projection: this run stores no features" in at.info[0].value
    assert not [c for c in at.get("bidi_component") if c.proto.component_name == "datamap_scatter"]
    goto(at, "review.py")
    at.radio(key=K.W_REVIEW_KIND).set_value("suspected OOD").run()
    assert not at.exception and not at.error
    assert "This run has no OOD scores" in at.info[0].value
    assert not any("Nothing to review" in i.value for i in at.info)
    for page in ("review.py", "export.py", "data_map.py"):
        goto(at, page)
        assert not at.exception and not at.error, page


@pytest.mark.parametrize("stores_features", [False, True])
def test_embeddings_says_plainly_there_is_no_projection(
    stores_features: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Analysed with the OOD stage on, but without features (the projection columns exist, all
    NaN) or with ``--projection none``: no empty chart, a message naming the command to run."""
    import warnings

    run = make_synthetic_run(tmp_path / "run", n_examples=300, n_eval=60 if stores_features else 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no features or logits"
        table = analyze_run(run, AnalyzeOptions(extra={"projection": "none"}))
    assert S.UMAP_X in table.columns and table[S.UMAP_X].isna().all()
    at = app_for(run, monkeypatch)
    goto(at, "embeddings.py")
    assert not at.exception and not at.error
    assert not [c for c in at.get("bidi_component") if c.proto.component_name == "datamap_scatter"]
    assert not any(c.value.startswith("Drawing") for c in at.caption)
    message = at.info[0].value
    if stores_features:
        assert "There is no projection yet" in message and f"`datamap project` `{run}`" in message
    else:
        assert "this run stores no features" in message and f"`datamap analyze` `{run}`" in message


def test_a_clicked_point_opens_its_example_and_the_map_marks_it(at: AppTest, run: Path) -> None:
    from dashboard.data import Selection

    table = pd.read_parquet(run / S.TABLE_FILE)
    example_id = table[S.EXAMPLE_ID].to_numpy()[7]
    shape = {"points": [{"customdata": int(example_id)}]}
    at.session_state[K.SELECTION] = {"data_map": Selection(ids=np.asarray([example_id]), how="points", shape=shape)}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Example `{example_id}`" in m.value for m in at.markdown)
    marked = chart_spec(at)["marked"]
    row = table.iloc[7]
    assert marked == {"id": int(example_id), "x": pytest.approx(float(row[S.VARIABILITY])),
                      "y": pytest.approx(float(row[S.CONFIDENCE]))}
    # a lasso opens nothing until a row is picked; the row picked is then marked
    ids = table[S.EXAMPLE_ID].to_numpy()[:3]
    at.session_state[K.SELECTION] = {"data_map": Selection(ids=ids, how="lasso")}
    at.run()
    assert chart_spec(at)["marked"] is None
    assert not any("Example `" in m.value for m in at.markdown)
    at.session_state[selection_table_key("data_map", None)] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    assert chart_spec(at)["marked"]["id"] == int(ids[2])
    assert any(f"Example `{ids[2]}`" in m.value for m in at.markdown)


def test_a_suspect_shows_evidence_and_its_suggested_label_preselected(
    fresh_run: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from analysis.runstore import load_features
    from dashboard.data import Selection

    table = pd.read_parquet(fresh_run / S.TABLE_FILE)
    suspects = table[(table[S.DIAGNOSIS].astype(str) == "suspect_mislabeled") & (table[S.SPLIT] == "train")
                     & (table[S.FINAL_PRED].astype("Int64") != table[S.LABEL].astype("Int64"))]
    assert len(suspects)
    row = suspects.iloc[0]
    example_id = row[S.EXAMPLE_ID]
    at = app_for(fresh_run, monkeypatch)
    at.session_state[K.SELECTION] = {"data_map": Selection(
        ids=np.asarray([example_id]), how="points", shape={"points": [{"customdata": int(example_id)}]})}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Nearest training examples" in m.value for m in at.markdown)
    # the view's image, 8 neighbours, 4 + 4 typical examples
    assert len(at.image) == 1 + 8 + 4 + 4
    # the neighbours are the nearest training features (an independent brute-force check)
    train_ids, train = load_features(fresh_run, "train")
    pos = int(np.flatnonzero(train_ids == example_id)[0])
    x = np.asarray(train, dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x[pos]
    sims[pos] = -np.inf
    top = np.argsort(-sims, kind="stable")[:8]
    labels = table.set_index(S.EXAMPLE_ID).loc[train_ids[top], S.LABEL].tolist()
    shown = [img.captions[0] for img in at.image[1:9]]
    assert [c.split(" · ")[0] for c in shown] == [f"class_{int(v)}" for v in labels]
    relabel = next(s for s in at.selectbox if s.label == "relabel to")
    assert relabel.value == int(row[S.FINAL_PRED])
    assert any("Relabel preselected" in c.value for c in at.caption)
    # saving the flag writes the preselected relabel with it
    next(s for s in at.selectbox if s.label == "flag").set_value("mislabeled")
    next(b for b in at.button if b.label == "Save").click().run()
    latest = FlagJournal(fresh_run).latest()
    assert latest["new_label"].tolist() == [int(row[S.FINAL_PRED])] and latest["flag"].tolist() == ["mislabeled"]


def test_example_view_shows_the_trajectory(at: AppTest, run: Path) -> None:
    import json

    from dashboard.data import Selection

    ids = pd.read_parquet(run / S.TABLE_FILE)[S.EXAMPLE_ID].to_numpy()[:3]
    at.session_state[K.SELECTION] = {"data_map": Selection(ids=ids, how="lasso")}
    at.session_state[selection_table_key("data_map", None)] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Example `{ids[1]}`" in m.value for m in at.markdown)
    assert chart_spec(at)["ids"]  # the map
    assert not at.get("plotly_chart")  # nothing on the page needs Plotly's bundle
    svgs = [json.loads(c.proto.json) for c in at.get("bidi_component") if c.proto.component_name == "datamap_svg"]
    assert len(svgs) == 1 and svgs[0].count("<circle") == 10  # the trajectory: one marker per epoch
    assert np.isfinite(float(ids[1]))


def test_a_test_or_ood_example_shows_its_prediction_from_the_logits(at: AppTest, run: Path) -> None:
    from analysis.runstore import load_logits
    from dashboard.data import Selection

    for split in ("test", "ood:far"):
        ids, logits = load_logits(run, split)
        example_id = ids[4]
        expected = int(np.argmax(np.asarray(logits)[4]))
        at.session_state[K.SELECTION] = {"data_map": Selection(
            ids=np.asarray([example_id]), how="points", shape={"points": [{"customdata": int(example_id)}]})}
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert any(f"Example `{example_id}`" in m.value for m in at.markdown)
        facts = at.table[0].value
        assert facts.loc["split", "value"] == split
        # (values wrap at their underscores: a zero-width space follows each)
        assert facts.loc["prediction", "value"].replace("\u200b", "") == f"class_{expected}"


def test_reset_to_analysis_values_restores_the_thresholds_the_analysis_used(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from analysis.dynamics import RegionThresholds as RT

    # analysed with other thresholds than the defaults: the sidebar starts (and resets) there
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    analyze_run(copy, AnalyzeOptions(thresholds=RT(confidence=0.62, variability=0.17),
                                     extra={"projection": "pca", "ood_quantile": 0.9}))
    recorded = json.loads((copy / S.OOD_EVAL_FILE).read_text())
    assert recorded["region_thresholds"] == {"confidence": 0.62, "variability": 0.17}
    table = pd.read_parquet(copy / S.TABLE_FILE)
    at = app_for(copy, monkeypatch)
    at.session_state[K.W_EXPAND_THRESHOLDS] = True
    at.run()
    sliders = {s.key: s for s in at.sidebar.slider}
    assert sliders[K.W_CONF_THRESHOLD].value == pytest.approx(0.62)
    assert sliders[K.W_VAR_THRESHOLD].value == pytest.approx(0.17)
    assert sliders[K.W_OOD_QUANTILE].value == pytest.approx(0.9)
    reset = at.sidebar.button(key=K.W_RESET_THRESHOLDS)
    assert reset.disabled  # already at the analysis' values
    # at those values the regions and the diagnosis are the stored columns
    at.sidebar.multiselect(key=K.W_REGIONS).set_value([S.AMBIGUOUS]).run()
    assert shown(at) == int((table[S.REGION] == S.AMBIGUOUS).sum())
    at.sidebar.slider(key=K.W_VAR_THRESHOLD).set_value(0.05).run()
    at.sidebar.slider(key=K.W_CONF_THRESHOLD).set_value(0.8).run()
    at.sidebar.slider(key=K.W_OOD_QUANTILE).set_value(0.5).run()
    moved = assign_regions(table[S.CONFIDENCE].to_numpy(float), table[S.VARIABILITY].to_numpy(float),
                           RT(confidence=0.8, variability=0.05))
    assert shown(at) == int((moved == S.AMBIGUOUS).sum()) != int((table[S.REGION] == S.AMBIGUOUS).sum())
    reset = at.sidebar.button(key=K.W_RESET_THRESHOLDS)
    assert not reset.disabled
    reset.click().run()
    assert not at.exception, [e.value for e in at.exception]
    sliders = {s.key: s for s in at.sidebar.slider}
    assert sliders[K.W_CONF_THRESHOLD].value == pytest.approx(0.62)
    assert sliders[K.W_VAR_THRESHOLD].value == pytest.approx(0.17)
    assert sliders[K.W_OOD_QUANTILE].value == pytest.approx(0.9)
    assert shown(at) == int((table[S.REGION] == S.AMBIGUOUS).sum())
    at.sidebar.multiselect(key=K.W_REGIONS).set_value([]).run()
    at.sidebar.multiselect(key=K.W_DIAGNOSES).set_value(["suspect_ood"]).run()
    assert shown(at) == int((table[S.DIAGNOSIS] == "suspect_ood").sum())
    assert at.sidebar.button(key=K.W_RESET_THRESHOLDS).disabled
    # closed, the thresholds still apply; the reset is inside the expander
    at.session_state[K.W_EXPAND_THRESHOLDS] = False
    at.run()
    assert not [b for b in at.sidebar.button if b.key == K.W_RESET_THRESHOLDS]
    assert shown(at) == int((table[S.DIAGNOSIS] == "suspect_ood").sum())
