"""A write killed with SIGKILL leaves its hidden temporary; the next write in that folder removes
it, but never the temporary of a writer that is still running. Written files honour the umask."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from analysis import runstore
from analysis import schema as S

from .conftest import copy_sample_run, hidden_leftovers, write_logs

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from analysis import runstore
    target = Path(sys.argv[1])
    if sys.argv[2] == "file":
        with runstore.atomic_path(target) as tmp:
            tmp.write_bytes(b"x" * 1000)
            print("ready", flush=True)
            time.sleep(60)
    else:
        from analysis.cartography import import_cartography
        import analysis.cartography as c
        real = c._import_epochs
        def slow(*a):
            out = real(*a)
            print("ready", flush=True)
            time.sleep(60)
            return out
        c._import_epochs = slow
        import_cartography(sys.argv[3], target)
""")


def _start_holding(*args: object) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, *map(str, args)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_killed_table_write_is_cleaned_by_the_next_write(tmp_path):
    run = copy_sample_run(tmp_path / "run")
    proc = _start_holding(run / S.TABLE_FILE, "file")
    try:
        assert len(hidden_leftovers(run)) == 1
        _kill(proc)
        assert len(hidden_leftovers(run)) == 1  # what SIGKILL leaves
        runstore.save_table(run, runstore.load_table(run))
        assert hidden_leftovers(run) == []
    finally:
        proc.kill()


def test_killed_export_temp_is_cleaned_by_the_next_export(tmp_path):
    from analysis.export import export_subset

    run = copy_sample_run(tmp_path / "run")
    proc = _start_holding(run / S.EXPORTS_DIR / "k.csv", "file")
    _kill(proc)
    table = runstore.load_table(run)
    export_subset(run, table, None, fmt="csv", name="other")
    assert hidden_leftovers(run) == []
    assert sorted(p.name for p in (run / S.EXPORTS_DIR).iterdir()) == ["other.csv", "other.manifest.json"]


def test_a_live_writers_temp_is_kept(tmp_path):
    run = copy_sample_run(tmp_path / "run")
    proc = _start_holding(run / S.TABLE_FILE, "file")
    try:
        runstore.save_table(run, runstore.load_table(run))
        assert len(hidden_leftovers(run)) == 1
    finally:
        _kill(proc)


def test_killed_import_folder_is_cleaned_by_the_next_import(tmp_path):
    logs = write_logs(tmp_path / "logs")
    proc = _start_holding(tmp_path / "run", "import", logs)
    assert len(hidden_leftovers(tmp_path)) == 1
    _kill(proc)
    from analysis.cartography import import_cartography

    import_cartography(logs, tmp_path / "run")
    assert hidden_leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "run"]


def test_legacy_temp_without_pid_is_cleaned_only_when_old(tmp_path):
    run = copy_sample_run(tmp_path / "run")
    young, old = run / ".table.parquet.abcd1234.tmp", run / ".table.parquet.zyxw9876.tmp"
    young.write_bytes(b"x")
    old.write_bytes(b"x")
    past = time.time() - runstore.LEGACY_TEMP_AGE_S - 60
    os.utime(old, (past, past))
    runstore.save_table(run, runstore.load_table(run))
    assert young.exists() and not old.exists()


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_honour_the_umask(tmp_path, mask, file_mode, dir_mode):
    from analysis.cartography import import_cartography

    logs = write_logs(tmp_path / "logs")
    previous = os.umask(mask)
    try:
        run = import_cartography(logs, tmp_path / "run")
        runstore.save_table(run, pd.DataFrame({S.EXAMPLE_ID: [1, 2]}))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(run.stat().st_mode) == dir_mode
    for name in (S.RUN_JSON, S.EXAMPLES_FILE, S.TABLE_FILE):
        assert stat.S_IMODE((run / name).stat().st_mode) == file_mode, name
    shard = next((run / S.DYNAMICS_DIR).iterdir())
    assert stat.S_IMODE(shard.stat().st_mode) == file_mode
