"""The ``datamap`` command's allocator settings, and that the environment overrides them."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "from analysis._alloc import prefer_plain_pages; prefer_plain_pages(); "
    "import numpy as np, pyarrow as pa; "
    "print(pa.default_memory_pool().backend_name, np._core.multiarray._get_madvise_hugepage())"
)


def _probe(**env: str) -> list[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("ARROW_DEFAULT_MEMORY_POOL", "NUMPY_MADVISE_HUGEPAGE")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**full, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_plain_pages_by_default_and_the_environment_wins():
    assert _probe() == ["system", "False"]
    assert _probe(ARROW_DEFAULT_MEMORY_POOL="mimalloc", NUMPY_MADVISE_HUGEPAGE="1") == ["mimalloc", "True"]
