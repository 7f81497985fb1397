"""`datamap demo` works on a per-user copy of the sample run, outside the source tree."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from analysis import cli
from analysis import schema as S
from analysis.demo import MARKER, SAMPLE_RUN, default_demo_dir, prepare_demo_run
from analysis.dynamics import RegionThresholds
from analysis.export import export_subset
from analysis.flags import FlagJournal
from analysis.pipeline import AnalyzeOptions, analyze_run
from analysis.runstore import load_table
from analysis.synthetic import make_synthetic_run


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An analysed run that already holds a person's flags and an export (never copied)."""
    run = make_synthetic_run(tmp_path_factory.mktemp("src") / "run", n_examples=120, n_epochs=3)
    analyze_run(run, AnalyzeOptions(ood=False))
    FlagJournal(run).add(1, flag="ood")
    export_subset(run, load_table(run), None, fmt="csv", name="old")
    return run


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_default_dir_follows_xdg_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_demo_dir() == tmp_path / "data" / "datamap" / "demo"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in ("", "relative/dir"):  # empty or relative: the spec's default
        monkeypatch.setenv("XDG_DATA_HOME", unset)
        assert default_demo_dir() == tmp_path / "home" / ".local" / "share" / "datamap" / "demo"


def test_copy_leaves_edits_behind_keeps_the_users_and_resets(source: Path, tmp_path: Path) -> None:
    before = _files(source)
    dest = tmp_path / "share" / "datamap" / "demo"
    assert prepare_demo_run(dest, source=source) == dest
    got = _files(dest)
    assert (dest / MARKER).is_file() and (dest / S.TABLE_FILE).is_file()
    assert got == {f for f in before if not f.startswith((S.FLAGS_FILE, S.EXPORTS_DIR))} | {MARKER}
    assert FlagJournal(dest).count() == 0
    # the person's review in the copy carries over to the next demo
    FlagJournal(dest).add(2, flag="mislabeled")
    prepare_demo_run(dest, source=source)
    assert FlagJournal(dest).latest()["flag"].tolist() == ["mislabeled"]
    # --reset: a fresh copy, the edits gone
    prepare_demo_run(dest, source=source, reset=True)
    assert FlagJournal(dest).count() == 0 and (dest / MARKER).is_file()
    assert _files(source) == before  # the source was never written to
    assert not list(dest.parent.glob(".demo.*"))  # no staging directory left behind


def test_a_newer_shipped_analysis_refreshes_the_copy_and_keeps_the_edits(
        source: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(source, src, ignore=shutil.ignore_patterns(S.FLAGS_FILE + "*", S.EXPORTS_DIR))
    dest = tmp_path / "demo"
    prepare_demo_run(dest, source=src)
    (dest / S.OOD_EVAL_FILE).write_text("{}", encoding="utf-8")  # as an older analysis left it
    FlagJournal(dest).add(3, flag="ambiguous")
    old_table = (dest / S.TABLE_FILE).read_bytes()
    # the same source again: nothing is rewritten
    prepare_demo_run(dest, source=src)
    assert (dest / S.TABLE_FILE).read_bytes() == old_table
    # a newer datamap ships the sample analysed at other thresholds
    analyze_run(src, AnalyzeOptions(ood=False, thresholds=RegionThresholds(confidence=0.8)))
    assert (src / S.TABLE_FILE).read_bytes() != old_table
    prepare_demo_run(dest, source=src)
    assert (dest / S.TABLE_FILE).read_bytes() == (src / S.TABLE_FILE).read_bytes()
    assert not (src / S.OOD_EVAL_FILE).exists() and not (dest / S.OOD_EVAL_FILE).exists()
    assert FlagJournal(dest).latest()["flag"].tolist() == ["ambiguous"]  # the review is kept
    # a copy made by an older datamap (a marker without a fingerprint) is refreshed too
    (dest / S.TABLE_FILE).write_bytes(old_table)
    (dest / MARKER).write_text("A copy of datamap's sample run.\n", encoding="utf-8")
    prepare_demo_run(dest, source=src)
    assert (dest / S.TABLE_FILE).read_bytes() == (src / S.TABLE_FILE).read_bytes()
    assert FlagJournal(dest).count() == 1
    assert not [p.name for p in dest.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".cache.")]


def test_a_foreign_directory_is_never_deleted(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "thesis.tex").write_text("precious")
    for reset in (False, True):
        with pytest.raises(ValueError, match="demo copy"):
            prepare_demo_run(dest, source=source, reset=reset)
    assert (dest / "thesis.tex").read_text() == "precious"
    with pytest.raises(ValueError, match="outside the shipped run"):
        prepare_demo_run(source, source=source)
    # an empty directory is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (prepare_demo_run(empty, source=source) / S.TABLE_FILE).is_file()


def test_cli_demo_serves_the_users_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    if not (SAMPLE_RUN / S.TABLE_FILE).is_file():
        pytest.fail("the shipped sample run is missing (python sample_data/build.py)")
    served: list[Path] = []

    def fake_serve(run_dir: Path, args: argparse.Namespace) -> int:
        served.append(Path(run_dir))
        return 0

    monkeypatch.setattr(cli, "_serve", fake_serve)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    shipped = _files(SAMPLE_RUN)
    assert cli.main(["demo", "--no-browser"]) == 0
    demo = tmp_path / "datamap" / "demo"
    assert served == [demo]
    assert "a fresh copy" in capsys.readouterr().out
    FlagJournal(demo).add(int(load_table(demo)[S.EXAMPLE_ID].iloc[0]), flag="keep")
    assert cli.main(["demo", "--no-browser"]) == 0
    assert "your copy" in capsys.readouterr().out and FlagJournal(demo).count() == 1
    assert cli.main(["demo", "--no-browser", "--reset"]) == 0
    assert FlagJournal(demo).count() == 0
    assert _files(SAMPLE_RUN) == shipped  # nothing written into the repository's run
    assert cli.main(["demo", "--reset", "--run-dir", str(demo)]) == 2
