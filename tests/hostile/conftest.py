"""Helpers for hostile-input tests: valid inputs to break, the CLI run in-process, and checks
that a failure left the inputs as they were and nothing hidden behind."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from analysis.cli import main as cli_main

SAMPLE_RUN = Path(__file__).resolve().parents[2] / "sample_data" / "run"


def write_logs(log_dir: Path, *, n: int = 12, n_epochs: int = 3, n_classes: int = 3) -> Path:
    """Valid cartography logs (hand-made logits: example i leans to class i % n_classes)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for e in range(n_epochs):
        with open(log_dir / f"dynamics_epoch_{e}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n):
                z = [0.5 * e if k == i % n_classes else -0.25 * k for k in range(n_classes)]
                fh.write(json.dumps({"guid": i, f"logits_epoch_{e}": z, "gold": i % n_classes}) + "\n")
    return log_dir


def copy_sample_run(dst: Path) -> Path:
    """A private copy of the shipped, analysed sample run."""
    shutil.copytree(SAMPLE_RUN, dst)
    return dst


def tree_state(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) with its content hash."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def hidden_leftovers(*folders: Path) -> list[str]:
    """Hidden temporaries (``.NAME.*``) anywhere under the folders."""
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [str(p) for p in folder.rglob(".*") if p.name not in (".", "..")]
    return found


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, err={self.err!r})"

    def one_line_error(self, *mentions: str) -> str:
        """Assert a clean failure: exit 2, one ``datamap: error:`` line naming each of ``mentions``."""
        assert self.code == 2, self
        lines = [ln for ln in self.err.splitlines() if ln.startswith("datamap: error:")]
        assert len(lines) == 1, self
        assert "Traceback" not in self.err, self
        for text in mentions:
            assert text in lines[0], (text, lines[0])
        return lines[0]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``datamap ARGS`` in this process; an uncaught exception fails the test."""

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        code = cli_main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
