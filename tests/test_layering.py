"""The layering rule: analysis/ never imports the UI stack, and reading a run needs no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BANNED = {"streamlit", "plotly"}


def test_analysis_source_has_no_ui_imports():
    offenders = []
    for path in (ROOT / "analysis").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in BANNED]
    assert not offenders, f"analysis/ imports the UI layer: {offenders}"


def test_analysis_import_pulls_no_ui_and_no_torch():
    code = (
        "import sys, analysis.pipeline, analysis.cli, analysis.runstore, analysis.cartography\n"
        "bad = sorted(m for m in ('streamlit', 'plotly', 'torch', 'umap') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"importing analysis loaded {out.stdout.strip()}"
