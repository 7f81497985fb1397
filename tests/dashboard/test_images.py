"""The ``image`` column: bytes or paths to image files, shown in the tables and the example view."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from analysis import schema as S
from dashboard import data as D
from dashboard import state as K
from dashboard.widgets import selection_table_key
from tests.dashboard.runs import make_image_run

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def _encoded(size: tuple[int, int], fmt: str, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8), mode="RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_image_cells_may_be_bytes_or_paths(tmp_path: Path) -> None:
    png = _encoded((8, 8), "PNG")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png)
    (tmp_path / "notes.txt").write_text("not an image")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-abs.png"
    elsewhere.write_bytes(png)
    assert D.image_bytes(png) == png
    assert D.image_bytes({"bytes": png, "path": None}) == png  # a Hugging Face Image cell
    assert D.image_bytes("images/a.png", tmp_path) == png  # relative to the run
    assert D.image_bytes({"bytes": None, "path": "images/a.png"}, tmp_path) == png
    assert D.image_bytes(str(elsewhere), tmp_path) == png  # absolute
    assert D.image_bytes(tmp_path / "images" / "a.png") == png  # a Path
    # not read: no run to resolve against, a missing file, a non-image suffix, a directory
    assert D.image_bytes("images/a.png") is None
    assert D.image_bytes("images/missing.png", tmp_path) is None
    assert D.image_bytes("notes.txt", tmp_path) is None
    assert D.image_bytes("images", tmp_path) is None
    assert D.image_bytes(float("nan")) is None and D.image_bytes(None) is None


def test_odd_paths_and_undecodable_files_are_no_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n"
    (tmp_path / "pointer.png").write_bytes(lfs)  # a dataset cloned without Git LFS
    odd = ["~no-such-user-here/x.png", "a\x00b.png", "pointer.png"]
    assert D.image_bytes("pointer.png", tmp_path) == lfs  # read, but it is no image:
    for v in odd:
        assert D.image_for_display(v, tmp_path) is None
    assert D.image_data_urls(pd.Series(odd), tmp_path) == [None, None, None]
    big = _encoded((30, 20), "PNG")
    monkeypatch.setattr(D, "MAX_IMAGE_PIXELS", 599)  # 30 x 20 = 600 pixels: not decoded
    assert D.image_for_display(big) is None and D.image_data_urls(pd.Series([big])) == [None]


def test_sixteen_bit_images_are_stretched_not_clipped() -> None:
    for w, h in ((64, 48), (400, 300)):  # a small file, and one above the pass-through size
        ramp = np.tile(np.linspace(0, 65535, w).astype(np.uint16), (h, 1))  # dark to bright
        img = Image.fromarray(ramp)  # mode I;16
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        shown = Image.open(io.BytesIO(D.image_for_display(buf.getvalue())))
        assert shown.mode in ("L", "RGB") and np.asarray(shown).std() > 30  # a ramp, not all white
        url = D.image_data_urls(pd.Series([buf.getvalue()]))[0]
        thumb = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert thumb.mode == "L" and np.asarray(thumb).std() > 30


def test_oversized_image_files_are_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    png = _encoded((8, 8), "PNG", seed=1)
    (tmp_path / "big.png").write_bytes(png)
    monkeypatch.setattr(D, "MAX_IMAGE_FILE_BYTES", len(png) - 1)
    assert D.image_bytes("big.png", tmp_path) is None


def test_thumbnails_keep_small_images_and_shrink_large_ones() -> None:
    small = _encoded((8, 8), "PNG")
    big = _encoded((400, 300), "JPEG")
    assert len(big) > 16_384
    urls = D.image_data_urls(pd.Series([small, big, None, b"junk"]))
    assert urls[0] == "data:image/png;base64," + base64.b64encode(small).decode()
    assert urls[1] is not None and urls[1].startswith("data:image/png;base64,")
    thumb = Image.open(io.BytesIO(base64.b64decode(urls[1].split(",", 1)[1])))
    assert max(thumb.size) == D.THUMBNAIL_PX and thumb.size == (96, 72)  # aspect kept
    assert urls[2] is None and urls[3] is None  # nothing, or bytes that are no image
    jpeg = _encoded((4, 4), "JPEG")
    assert D.image_data_urls(pd.Series([jpeg]))[0].startswith("data:image/jpeg;base64,")


def test_thumbnails_of_table_images_are_made_once_per_run_and_row(monkeypatch: pytest.MonkeyPatch) -> None:
    big = _encoded((400, 300), "JPEG", seed=2)
    made: list[int] = []
    real = D._thumbnail
    monkeypatch.setattr(D, "_thumbnail", lambda data: made.append(len(data)) or real(data))
    key = ("/nowhere/table.parquet", 12345, len(big))  # a run identity of this test's own
    values = pd.Series([big, big, None])
    first = D.image_data_urls(values, key=key, rows=[7, 8, 9])
    assert len(made) == 2 and first[0] == first[1] is not None and first[2] is None
    again = D.image_data_urls(values, key=key, rows=[8, 7, 9])  # the same rows, in another order
    assert again[:2] == first[:2] and len(made) == 2  # nothing shrunk again
    assert D.image_data_urls(values) == first  # uncached: the same thumbnails
    with pytest.raises(ValueError, match="one row position per value"):
        D.image_data_urls(values, key=key, rows=[1])


def test_example_view_shows_an_image_stored_as_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_image_run(tmp_path / "src", n_examples=200, n_eval=40)
    run = tmp_path / "run"
    shutil.copytree(src, run)
    table = pd.read_parquet(run / S.TABLE_FILE)
    (run / "images").mkdir()
    paths = []
    for ex_id, data in zip(table[S.EXAMPLE_ID], table[S.IMAGE], strict=True):
        (run / "images" / f"{ex_id}.png").write_bytes(data)
        paths.append(f"images/{ex_id}.png")
    table[S.IMAGE] = paths
    table.to_parquet(run / S.TABLE_FILE)
    ids = table[S.EXAMPLE_ID].to_numpy()[:3]

    monkeypatch.setenv("DATAMAP_RUN_DIR", str(run))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state[K.SELECTION] = {"data_map": D.Selection(ids=ids, how="lasso")}
    at.session_state[selection_table_key("data_map", None)] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Example `{ids[1]}`" in m.value for m in at.markdown)
    assert not any("No image or text" in c.value for c in at.caption)
    # the example's own image (the evidence panel below it shows neighbours' thumbnails)
    views = [img for img in at.image if img.captions and img.captions[0].startswith("split ")]
    assert len(views) == 1
    assert views[0].captions == [f"split {table[S.SPLIT].iloc[1]}"]
    # a file that is no image: a message in the view, nothing breaks
    (run / "images" / f"{ids[2]}.png").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    at.session_state[selection_table_key("data_map", None)] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Example `{ids[2]}`" in m.value for m in at.markdown)
    assert not [img for img in at.image if img.captions and img.captions[0].startswith("split ")]
    assert any("could not be read or decoded" in c.value for c in at.caption)
