"""The UMAP map off the critical path: `analyze` leaves it pending, the job fills it in."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.manifold import trustworthiness

from analysis import projection_job, runstore
from analysis import schema as S
from analysis.cli import main as cli_main
from analysis.pipeline import AnalyzeOptions, analyze_run
from analysis.synthetic import make_synthetic_run

OPTIONS = AnalyzeOptions(extra={"projection_params": {"n_epochs": 50}, "ood_scorers": ["msp"]})


@pytest.fixture(scope="module")
def pending_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_synthetic_run(tmp_path_factory.mktemp("job") / "run", n_examples=800, n_features=12,
                             n_eval=100)
    analyze_run(run, OPTIONS)
    return run


def _coords(table) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.column_stack([table[S.UMAP_X].to_numpy(float), table[S.UMAP_Y].to_numpy(float)])


def test_analyze_writes_a_pca_stand_in_and_a_pending_status(pending_run: Path) -> None:
    status = projection_job.read_status(pending_run)
    assert status is not None
    assert (status["state"], status["table_method"]) == ("pending", "pca")
    table = runstore.load_table(pending_run)
    ids, train = runstore.load_features(pending_run, S.TRAIN_SPLIT)
    rows = table.set_index(S.EXAMPLE_ID).loc[ids]
    # the first principal component of the centred training features, by hand (SVD)
    centred = np.asarray(train, np.float64) - np.asarray(train, np.float64).mean(axis=0)
    pc1 = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
    assert abs(np.corrcoef(pc1, rows[S.UMAP_X].to_numpy(float))[0, 1]) > 0.999


def test_job_writes_the_umap_map_and_a_second_analyze_reuses_it(pending_run: Path) -> None:
    seen: list[tuple[str, float]] = []
    status = projection_job.run_projection_job(pending_run, progress=lambda s, f: seen.append((s, f)))
    assert status["state"] == "done" and status["table_method"] == "umap", status
    assert status["peak_rss_mb"] > 0
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] >= 0.95
    assert any("fitting UMAP" in s for s, _ in seen)
    table = runstore.load_table(pending_run)
    coords = _coords(table)
    assert np.isfinite(coords).all()
    ids, train = runstore.load_features(pending_run, S.TRAIN_SPLIT)
    pos = table.reset_index().set_index(S.EXAMPLE_ID).loc[ids, "index"].to_numpy()
    assert trustworthiness(np.asarray(train), coords[pos], n_neighbors=10) >= 0.9
    again = analyze_run(pending_run, OPTIONS)  # cached: straight into the table, nothing pending
    np.testing.assert_allclose(_coords(again), coords)
    assert projection_job.read_status(pending_run)["table_method"] == "umap"  # type: ignore[index]


def test_in_line_umap_and_none(pending_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(pending_run, run)
    analyze_run(run, AnalyzeOptions(extra={**OPTIONS.extra, "projection": "umap"}))
    assert projection_job.read_status(run)["state"] == "done"  # type: ignore[index]
    analyze_run(run, AnalyzeOptions(extra={**OPTIONS.extra, "projection": "none"}))
    assert projection_job.read_status(run) is None


def test_failed_job_is_recorded_and_the_cli_says_why(pending_run: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    run = tmp_path / "broken"
    shutil.copytree(pending_run, run)
    for f in (run / S.CACHE_DIR).glob("projection-*.npz"):
        f.unlink()
    projection_job.write_status(run, state="pending")
    shutil.rmtree(run / S.FEATURES_DIR)
    assert cli_main(["project", str(run)]) == 2
    assert "no finite features" in capsys.readouterr().err
    status = projection_job.read_status(run)
    assert status is not None and status["state"] == "failed" and "features" in status["error"]


def test_server_starts_a_job_only_when_one_is_pending(pending_run: Path, tmp_path: Path) -> None:
    from dashboard import server

    run = tmp_path / "srv"
    shutil.copytree(pending_run, run)
    projection_job.write_status(run, state="done", table_method="umap")
    assert server.start_projection_job(run) is None
    projection_job.write_status(run, state="running", pid=-1)  # a job that died: restarted
    job = server.start_projection_job(run)
    assert job is not None
    server.stop_projection_job(job)
    assert job.poll() is not None
    assert not projection_job.job_is_alive({"state": "running", "pid": job.pid})
