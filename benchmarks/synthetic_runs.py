"""Analysed synthetic runs shared by the dashboard and report benchmarks (built once, reused)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from analysis import runstore
from analysis import schema as S

IMAGE_POOL = 1000
"""Distinct image files of a run built with ``images=True`` (row ``i`` shows file ``i % 1000``)."""


def _write_image_pool(run: Path) -> list[str]:
    """:data:`IMAGE_POOL` small PNG files under ``run/images/`` (a digit glyph on noise, 28x28);
    returns their paths relative to the run (what an ``image`` cell of a run of files holds)."""
    from PIL import Image, ImageDraw

    folder = run / "images"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for k in range(IMAGE_POOL):
        img = Image.fromarray((rng.random((28, 28)) * 60).astype(np.uint8), mode="L")
        ImageDraw.Draw(img).text((10, 8), str(k % 10), fill=255)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        name = f"images/{k:04d}.png"
        (run / name).write_bytes(buf.getvalue())
        names.append(name)
    return names


def build_run(n: int, base: Path, *, images: bool = False) -> Path:
    """An analysed synthetic run of ``n`` training examples (reused when present).

    With ``images=True`` (in ``base/n{n}-images``) every row also has an ``image``: a path to one
    of :data:`IMAGE_POOL` small PNG files in the run, so galleries and example views decode and
    send real thumbnails.
    """
    from analysis.pipeline import AnalyzeOptions, analyze_run
    from analysis.synthetic import make_synthetic_run

    run = base / (f"n{n}-images" if images else f"n{n}")
    if (run / S.TABLE_FILE).is_file():
        return run
    t0 = time.perf_counter()
    n_eval = min(max(n // 20, 500), 20_000)
    make_synthetic_run(run, n_examples=n, n_eval=n_eval, seed=1)
    if images:
        examples = runstore.load_examples(run)
        names = np.asarray(_write_image_pool(run), dtype=object)
        examples[S.IMAGE] = names[np.arange(len(examples)) % IMAGE_POOL]
        runstore.save_examples(run, examples)
    analyze_run(run, AnalyzeOptions(extra={
        "projection": "pca",
        "ood_scorers": ["ood_msp", "ood_energy", "ood_mahalanobis"],
    }))
    print(f"  built {run} in {time.perf_counter() - t0:.1f} s", flush=True)
    return run
