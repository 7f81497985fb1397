"""Every example in docs/integrations.md runs as written and produces a run that analyses."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("torch")

from analysis import runstore  # noqa: E402
from analysis import schema as S  # noqa: E402
from analysis.pipeline import AnalyzeOptions, analyze_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "integrations.md"
BLOCK = re.compile(r"```python\n# file: (?P<name>[\w.]+)\n(?P<code>.*?)```", re.S)
# example file -> (run directory it writes, source, epochs, examples with dynamics, extra module)
EXPECTED = {
    "plain_loop.py": ("runs/digits-plain", S.SOURCE_FORWARD_PASS, 5, 1437, None),
    "hf_trainer.py": ("runs/digits-hf", S.SOURCE_FORWARD_PASS, 3, 1797, "transformers"),
    "lightning_callback.py": ("runs/digits-pl", S.SOURCE_FORWARD_PASS, 3, 1797, "lightning"),
    "distributed.py": ("runs/digits-ddp", S.SOURCE_FORWARD_PASS, 3, 1797, None),
    "capture_ood.py": ("runs/digits-ood", S.SOURCE_FORWARD_PASS, 5, 1443, None),
}


def _examples() -> dict[str, str]:
    return {m["name"]: m["code"] for m in BLOCK.finditer(DOC.read_text())}


def test_every_documented_example_is_checked():
    assert sorted(_examples()) == sorted(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(tmp_path, monkeypatch, name):
    run_rel, source, n_epochs, n_dyn, needs = EXPECTED[name]
    if needs:
        pytest.importorskip(needs)
    (tmp_path / name).write_text(_examples()[name])
    if name == "distributed.py":
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", name]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    else:
        # in this process (as `python name.py` would, from its folder): saves the interpreter
        # and torch start-up of a subprocess per example
        monkeypatch.chdir(tmp_path)
        runpy.run_path(str(tmp_path / name), run_name="__main__")

    run = tmp_path / run_rel
    meta = runstore.load_run_meta(run)
    assert meta.source == source and meta.n_epochs == n_epochs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # padded distributed samplers warn about repeats
        table = analyze_run(run, AnalyzeOptions(ood=False), write=False)
    seen = table[table[S.N_EPOCHS_SEEN] > 0]
    assert len(seen) == n_dyn and (seen[S.N_EPOCHS_SEEN] == n_epochs).all()
    assert seen[S.CONFIDENCE].between(0, 1).all()
    if name == "distributed.py":
        assert sorted(p.name for p in (run / S.DYNAMICS_DIR).glob("*.parquet")) == [
            "rank-0.parquet", "rank-1.parquet"]
    if name in ("plain_loop.py", "capture_ood.py"):
        for split in set(table[S.SPLIT]):
            ids, feats = runstore.load_features(run, split)
            assert sorted(ids) == sorted(table.loc[table[S.SPLIT] == split, S.EXAMPLE_ID])
            assert feats.shape[1] == 64
