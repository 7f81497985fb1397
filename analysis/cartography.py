"""Import and export the training-dynamics logs of the original Dataset Cartography code.

The original code (Swayamdipta et al., 2020) writes one file per epoch,
``training_dynamics/dynamics_epoch_N.jsonl``, one JSON object per line::

    {"guid": 50325, "logits_epoch_0": [2.94, -2.28], "gold": 0}

``guid`` may be an int or a string and is kept as the run's ``example_id``; ``gold`` is the
integer label. Files in the exact layout pandas writes (no spaces, keys in that order) are split
by Arrow's multithreaded CSV reader; any other layout goes through Arrow's JSON reader, and a
line-by-line parser runs only to name the offending line when a file is malformed. Two files are
parsed at a time and each epoch is written while the next are parsed. Logits are kept as float64
in the ``logits`` column so that an export reproduces them exactly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from analysis import runstore
from analysis import schema as S
from analysis.dynamics import per_epoch_from_logits
from analysis.schema import SchemaError, _py

__all__ = ["import_cartography", "export_cartography", "read_epoch_file", "EpochLog"]

_FILE_RE = re.compile(r"^dynamics_epoch_(\d+)\.jsonl$")


@dataclass
class EpochLog:
    """One parsed epoch file."""

    epoch: int
    guids: np.ndarray
    gold: np.ndarray
    logits: np.ndarray  # (n_rows, n_classes) float64


def _find_epoch_files(log_dir: Path) -> list[tuple[int, Path]]:
    if not log_dir.is_dir():
        raise FileNotFoundError(f"Log directory {str(log_dir)!r} does not exist.")
    found: dict[int, Path] = {}
    for p in sorted(log_dir.iterdir()):
        m = _FILE_RE.match(p.name)
        if not m:
            continue
        if not p.is_file():
            what = "a broken or looping symlink" if p.is_symlink() and not p.exists() else "not a regular file"
            raise SchemaError(
                f"{str(p)!r} is {what}; every `dynamics_epoch_N.jsonl` in LOG_DIR must be a "
                "readable file. Fix or remove it."
            )
        epoch = int(m.group(1))
        if epoch in found:
            raise SchemaError(
                f"{str(found[epoch])!r} and {str(p)!r} are both epoch {epoch}; keep one file per "
                "epoch."
            )
        found[epoch] = p
    if not found and (log_dir / "training_dynamics").is_dir():
        return _find_epoch_files(log_dir / "training_dynamics")
    if not found:
        raise SchemaError(
            f"No `dynamics_epoch_N.jsonl` files in {str(log_dir)!r}. Point LOG_DIR at the "
            "`training_dynamics/` folder the cartography code wrote."
        )
    return sorted(found.items())


_MAX_DEPTH = 64
"""Deepest JSON nesting accepted in a log line (a valid line nests 2 levels)."""
_LOGIT_LIMIT = float(np.finfo(np.float32).max) / 4
"""Largest logit magnitude analysed: the compact columns are float32 and hold differences."""
_INT64 = (-(2**63), 2**63 - 1)


def _line_depth(line: bytes) -> int:
    """Nesting depth of one JSON line (brackets inside strings do not count); stops past the limit."""
    depth = peak = 0
    in_string = escaped = False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            peak = max(peak, depth)
            if peak > _MAX_DEPTH:
                break
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return peak


def _check_nesting(path: Path) -> None:
    """Reject a line nested deeper than ``_MAX_DEPTH`` before Arrow's JSON reader sees the file.

    Arrow's JSON reader crashes the process on lines nested ~20,000 deep and Python's raises
    ``RecursionError`` past ~1,000. A vectorised count of opening brackets per line bounds each
    line's depth; only lines whose count passes the limit are scanned exactly.
    """
    data = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
    opens = np.flatnonzero((data == 0x5B) | (data == 0x7B))
    if len(opens) <= _MAX_DEPTH:
        return
    newlines = np.flatnonzero(data == 0x0A)
    per_line = np.bincount(np.searchsorted(newlines, opens), minlength=len(newlines) + 1)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(data)]))
    for i in np.flatnonzero(per_line > _MAX_DEPTH):
        if _line_depth(bytes(data[starts[i]:ends[i]])) > _MAX_DEPTH:
            raise SchemaError(
                f"{path}:{i + 1}: JSON nested more than {_MAX_DEPTH} levels deep; a cartography "
                "log line is an object holding a list of logits (2 levels). This file is not a "
                "cartography log."
            )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _slow_parse(path: Path, epoch: int) -> EpochLog:
    """Line-by-line parse that names the first bad line; used when Arrow's reader fails."""
    key = f"logits_epoch_{epoch}"
    guids: list[Any] = []
    gold: list[int] = []
    logits: list[list[float]] = []
    n_classes: int | None = None
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SchemaError(
                    f"{where}: not UTF-8 text (byte {exc.start + 1} of the line is "
                    f"{raw[exc.start:exc.start + 1]!r}). Cartography logs are UTF-8 JSON lines."
                ) from exc
            if not line.strip():
                continue
            try:
                rec = json.loads(line, parse_constant=_reject_constant)
            except RecursionError as exc:
                raise SchemaError(f"{where}: JSON nested too deeply to be a cartography log line.") from exc
            except ValueError as exc:
                if "non-finite" in str(exc):
                    raise SchemaError(
                        f"{where}: logits contain NaN or Infinity; the model diverged. Re-run "
                        "training or drop that epoch's file."
                    ) from exc
                raise SchemaError(f"{where}: malformed JSON line ({exc}).") from exc
            if not isinstance(rec, dict):
                raise SchemaError(f"{where}: expected a JSON object, got {type(rec).__name__}.")
            for k in ("guid", "gold", key):
                if k not in rec or rec[k] is None:
                    raise SchemaError(f"{where}: field `{k}` is missing. Each line needs guid, gold and {key}.")
            z = rec[key]
            if isinstance(z, list) and any(v is None for v in z):
                raise SchemaError(
                    f"{where}: `{key}` contains null (how pandas writes NaN): the logits are not "
                    "finite; the model diverged. Re-run training or drop that epoch's file."
                )
            if not isinstance(z, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in z):
                raise SchemaError(f"{where}: `{key}` must be a list of numbers, got {str(z)[:80]}.")
            if n_classes is None:
                n_classes = len(z)
            elif len(z) != n_classes:
                raise SchemaError(
                    f"{where}: `{key}` has {len(z)} values but earlier lines have {n_classes}; "
                    "every line must have one logit per class."
                )
            g = rec["gold"]
            if isinstance(g, bool) or not isinstance(g, int) or not _INT64[0] <= g <= _INT64[1]:
                raise SchemaError(f"{where}: `gold` must be an integer class index, got {str(g)[:40]}.")
            guid = rec["guid"]
            if not isinstance(guid, (int, str)) or isinstance(guid, bool):
                raise SchemaError(f"{where}: `guid` must be an int or a string, got {str(guid)[:80]!r}.")
            if isinstance(guid, int) and not _INT64[0] <= guid <= _INT64[1]:
                raise SchemaError(
                    f"{where}: integer `guid` {guid} does not fit in 64 bits; write large ids as "
                    "strings."
                )
            guids.append(guid)
            gold.append(g)
            logits.append(z)
    if not guids:
        raise SchemaError(f"{str(path)!r} is empty.")
    kinds = {type(g) for g in guids}
    g_arr = np.array([str(g) for g in guids], dtype=object) if len(kinds) > 1 else (
        np.array(guids, dtype=np.int64) if kinds == {int} else np.array(guids, dtype=object)
    )
    return EpochLog(epoch, g_arr, np.array(gold, dtype=np.int64), np.array(logits, dtype=np.float64))


_CSV_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def _parse_compact(path: Path, epoch: int) -> EpochLog | None:
    """Fast path for the exact layout ``pandas.DataFrame.to_json(orient="records", lines=True)``
    writes, which is what the original code produces::

        {"guid":50325,"logits_epoch_0":[2.94,-2.28,0.1],"gold":0}

    Split at commas, such a line is ``C + 2`` fields: the inner logits are plain numbers that
    Arrow's multithreaded CSV reader converts directly (several times faster than its JSON
    reader), and only the four edge fields need their fixed prefix or suffix removed. Every row
    is checked against that layout; anything else (other key order, whitespace, escapes in string
    guids, fewer than three classes, null or malformed values, a varying class count) returns
    None and the JSON reader handles the file.
    """
    key = f"logits_epoch_{epoch}"
    with open(path, "rb") as fh:
        first = fh.readline(1 << 16)
    try:
        rec = json.loads(first)
    except (ValueError, RecursionError):
        return None
    if not isinstance(rec, dict) or list(rec) != ["guid", key, "gold"] or not isinstance(rec[key], list):
        return None
    n_classes = len(rec[key])
    if n_classes < 3:
        return None
    names = [f"f{i}" for i in range(n_classes + 2)]
    edges = (names[0], names[1], names[n_classes], names[n_classes + 1])
    types = {n: (pa.string() if n in edges else pa.float64()) for n in names}
    try:
        tbl = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 20),
            parse_options=pacsv.ParseOptions(quote_char=False, double_quote=False, escape_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types=types, null_values=[], strings_can_be_null=False,
            ),
        )
    except _CSV_ERRORS:
        return None  # a row with another field count, or a logit that is not a plain number
    n = tbl.num_rows
    if n == 0:
        return None
    c_id, c_first, c_last, c_gold = (tbl.column(c).combine_chunks() for c in edges)
    pre_id, pre_z, pre_gold = '{"guid":', f'"{key}":[', '"gold":'
    layout = (pc.starts_with(c_id, pre_id), pc.starts_with(c_first, pre_z), pc.ends_with(c_last, "]"),
              pc.starts_with(c_gold, pre_gold), pc.ends_with(c_gold, "}"))
    if not all(pc.all(m).as_py() for m in layout):
        return None
    try:
        z_first = pc.cast(pc.utf8_slice_codeunits(c_first, len(pre_z)), pa.float64())
        z_last = pc.cast(pc.utf8_slice_codeunits(c_last, 0, -1), pa.float64())
        gold = pc.cast(pc.utf8_slice_codeunits(c_gold, len(pre_gold), -1), pa.int64())
    except _CSV_ERRORS:
        return None
    id_text = pc.utf8_slice_codeunits(c_id, len(pre_id))
    n_quoted = pc.sum(pc.starts_with(id_text, '"')).as_py() or 0
    guids: np.ndarray
    if n_quoted == 0:
        try:
            guids = pc.cast(id_text, pa.int64()).to_numpy()
        except _CSV_ERRORS:
            return None
    elif n_quoted == n and pc.all(pc.ends_with(id_text, '"')).as_py():
        # pandas escapes "/" as "\\/"; any other escape is left to the JSON reader.
        inner = pc.replace_substring(pc.utf8_slice_codeunits(id_text, 1, -1), "\\/", "/")
        if pc.any(pc.match_substring_regex(inner, r'["\\]')).as_py():
            return None
        guids = inner.to_numpy(zero_copy_only=False).astype(object)
    else:
        return None  # mixed int and string guids
    logits = np.empty((n, n_classes), dtype=np.float64)
    logits[:, 0] = z_first.to_numpy(zero_copy_only=False)
    for j in range(1, n_classes - 1):
        logits[:, j] = tbl.column(j + 1).to_numpy()
    logits[:, -1] = z_last.to_numpy(zero_copy_only=False)
    return EpochLog(epoch, guids, gold.to_numpy(), logits)


def read_epoch_file(path: str | os.PathLike[str], epoch: int) -> EpochLog:
    """Parse one ``dynamics_epoch_N.jsonl`` file.

    Raises
    ------
    SchemaError
        Malformed line, missing field, NaN/inf logits, or varying class count (naming file:line).
    """
    p = Path(path)
    key = f"logits_epoch_{epoch}"
    if p.stat().st_size == 0:
        raise SchemaError(f"{str(p)!r} is empty.")
    fast = _parse_compact(p, epoch)  # the pandas layout: no nesting possible, every row checked
    if fast is not None:
        return fast
    _check_nesting(p)  # before Arrow's JSON reader, which crashes on very deep nesting
    try:
        # 1 MiB blocks let Arrow parse one file on every core (measured fastest here).
        tbl = pajson.read_json(p, read_options=pajson.ReadOptions(block_size=1 << 20))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return _slow_parse(p, epoch)
    names = tbl.column_names
    if any(k not in names for k in ("guid", "gold", key)):
        return _slow_parse(p, epoch)  # names the line and the missing field
    z_col = tbl.column(key)
    g_col = tbl.column("gold")
    id_col = tbl.column("guid")
    if (z_col.null_count or g_col.null_count or id_col.null_count
            or not pa.types.is_integer(g_col.type)
            or not (pa.types.is_list(z_col.type) or pa.types.is_large_list(z_col.type))
            or not (pa.types.is_integer(id_col.type) or pa.types.is_string(id_col.type))):
        return _slow_parse(p, epoch)
    z_arr = z_col.combine_chunks()
    lengths = pa.compute.list_value_length(z_arr).to_numpy(zero_copy_only=False)
    if len(lengths) == 0 or lengths.min() != lengths.max() or z_arr.values.null_count:
        return _slow_parse(p, epoch)
    values = z_arr.flatten().to_numpy(zero_copy_only=False)
    if values.dtype.kind not in "fi":
        return _slow_parse(p, epoch)
    logits = values.astype(np.float64, copy=False).reshape(len(z_arr), int(lengths[0]))
    guids = id_col.to_numpy()
    if guids.dtype.kind in "OUS":
        guids = guids.astype(object)
    return EpochLog(epoch, guids, g_col.to_numpy().astype(np.int64), logits)


def import_cartography(
    log_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    class_names: list[str] | None = None,
    keep_logits: bool = True,
    overwrite: bool = False,
    task: str = "",
) -> Path:
    """Convert a cartography ``training_dynamics/`` folder into a datamap run.

    Parameters
    ----------
    log_dir : path
        Folder with ``dynamics_epoch_N.jsonl`` files (or its parent).
    run_dir : path
        Run directory to create. It is built in a temporary folder and renamed into place, so a
        failed import leaves nothing behind.
    keep_logits : bool, default True
        Keep the full logits (needed by :func:`export_cartography`).
    overwrite : bool, default False
        Replace an existing non-empty ``run_dir``.

    Raises
    ------
    SchemaError
        Empty directory, malformed or NaN lines, missing ``gold``, class counts differing between
        epochs, duplicate guids within an epoch, a guid whose gold label changes between epochs,
        or labels outside ``[0, n_classes)``.
    """
    target = Path(run_dir)
    if target.exists() and not target.is_dir():
        raise FileExistsError(
            f"RUN_DIR {str(target)!r} is an existing file, not a directory. Choose a new RUN_DIR."
        )
    if target.exists() and any(target.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{str(target)!r} already exists and is not empty. Pass --overwrite to replace it."
            )
        _check_replaceable(target, Path(log_dir))
    files = _find_epoch_files(Path(log_dir))
    if target.exists():
        _check_replaceable(target, *(f for _, f in files))
    target.parent.mkdir(parents=True, exist_ok=True)
    runstore.clean_stale_temps(target.parent, target.name, suffix="")
    tmp = Path(tempfile.mkdtemp(prefix=runstore.temp_prefix(target.name), dir=target.parent))
    try:
        os.chmod(tmp, runstore.default_mode(directory=True))
        epochs = _import_epochs(files, tmp, keep_logits)
        n_classes = epochs[0].n_classes
        names = class_names or [str(k) for k in range(n_classes)]
        if len(names) != n_classes:
            raise ValueError(f"Expected {n_classes} class names, got {len(names)}.")
        ex_ids, positions = _example_positions([ep.guids for ep in epochs])
        gold = np.full(len(ex_ids), -1, dtype=np.int64)
        for ep, pos in zip(epochs, positions, strict=True):
            seen = gold[pos]
            clash = (seen >= 0) & (seen != ep.gold)
            if clash.any():
                i = int(np.flatnonzero(clash)[0])
                raise SchemaError(
                    f"{str(ep.path)!r}: guid {_py(ex_ids[pos[i]])!r} has gold {int(ep.gold[i])} but "
                    f"{int(seen[i])} in an earlier epoch; a guid must keep its label."
                )
            gold[pos] = ep.gold
        examples = pd.DataFrame({
            S.EXAMPLE_ID: ex_ids if ex_ids.dtype != object else ex_ids.tolist(),
            S.SPLIT: S.TRAIN_SPLIT,
            S.LABEL: pd.array(gold, dtype="Int64"),
        })
        examples[S.LABEL_NAME] = np.asarray(names, dtype=object)[gold]
        runstore.save_run_meta(tmp, runstore.RunMeta(
            class_names=names, n_epochs=len(epochs), source=S.SOURCE_CARTOGRAPHY, task=task,
            extra={"imported_from": str(Path(log_dir).resolve())},
        ))
        runstore.save_examples(tmp, examples)
        aside = _replace_run(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if aside is not None:
        kept = sorted(p.name for p in aside.iterdir())
        warnings.warn(
            f"kept {', '.join(kept)} of the replaced run in {str(aside)!r}; the new import does not "
            f"use them (move {S.FLAGS_FILE} back into {str(target)!r} to apply its flags).",
            stacklevel=2,
        )
    return target


_REBUILT = frozenset({S.RUN_JSON, S.EXAMPLES_FILE, S.DYNAMICS_DIR, S.FEATURES_DIR, S.LOGITS_DIR,
                      S.TABLE_FILE, S.CACHE_DIR, S.OOD_EVAL_FILE})
"""What an import rebuilds; everything else in a replaced run (the review journal, exports, a
person's own files) is kept."""


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_replaceable(target: Path, *inputs: Path) -> None:
    """Refuse ``--overwrite`` where it would delete the inputs or something that is not a run."""
    for path in inputs:
        if _inside(path, target):
            raise ValueError(
                f"LOG_DIR {str(path)!r} lies inside RUN_DIR {str(target)!r}: --overwrite would delete "
                "the input logs. Import into another RUN_DIR."
            )
    if not (target / S.RUN_JSON).is_file():
        raise FileExistsError(
            f"{str(target)!r} is not empty and is not a datamap run (no {S.RUN_JSON}); --overwrite "
            "only replaces a run. Choose a new or empty RUN_DIR."
        )


def _replace_run(src: Path, dst: Path) -> Path | None:
    """Move the new run ``src`` onto ``dst``; files of the old run that the import does not
    rebuild go to ``dst/previous-<UTC time>/``, which is returned (None when nothing was kept)."""
    if not dst.exists():
        os.replace(src, dst)
        return None
    old = dst.with_name(f"{runstore.temp_prefix(dst.name)}old")
    os.replace(dst, old)
    os.replace(src, dst)
    keep = sorted(p for p in old.iterdir() if p.name not in _REBUILT)
    aside = None
    if keep:
        # the journal first: a crash mid-move leaves it in `old`, which cleanup never deletes
        keep.sort(key=lambda p: not p.name.startswith(S.FLAGS_FILE))
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = dst / f"previous-{stamp}"
        aside.mkdir()
        for path in keep:
            os.replace(path, aside / path.name)
    shutil.rmtree(old, ignore_errors=True)
    return aside


@dataclass
class _Epoch:
    """One epoch file, checked and in guid order, as a dynamics table part."""

    path: Path
    n_classes: int
    guids: np.ndarray  # sorted
    gold: np.ndarray  # per sorted row
    line: np.ndarray  # 0-based line of each sorted row in the file
    table: pa.Table

    def restring(self) -> None:
        """Turn int guids into strings, re-sorted the way string guids sort."""
        if self.guids.dtype.kind == "O":
            return
        as_str = self.guids.astype(str).astype(object)
        order = np.array(sorted(range(len(as_str)), key=as_str.__getitem__), dtype=np.int64)
        self.guids, self.gold, self.line = as_str[order], self.gold[order], self.line[order]
        self.table = self.table.take(pa.array(order)).set_column(
            0, S.EXAMPLE_ID, pa.array(self.guids.tolist(), type=pa.string())
        )


def _prepare_epoch(path: Path, epoch: int, keep_logits: bool) -> _Epoch:
    """Parse one file, check it on its own (finite logits, unique guids), order its rows by guid
    and compute the per-epoch values."""
    log = read_epoch_file(path, epoch)
    if log.logits.shape[1] < 2:
        raise SchemaError(
            f"{str(path)!r}: each line has {log.logits.shape[1]} logit(s); a classifier's log needs "
            "one logit per class and at least 2 classes."
        )
    finite = np.isfinite(log.logits).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise SchemaError(
            f"{path}:{row + 1}: logits contain NaN or inf; the model diverged. Re-run training "
            "or drop that epoch's file."
        )
    huge = (np.abs(log.logits) > _LOGIT_LIMIT).any(axis=1)
    if huge.any():
        row = int(np.flatnonzero(huge)[0])
        value = float(log.logits[row][np.abs(log.logits[row]) > _LOGIT_LIMIT][0])
        raise SchemaError(
            f"{path}:{row + 1}: logit {value:g} is finite but too large to analyse (magnitudes up "
            f"to {_LOGIT_LIMIT:.1e} are supported); the model diverged. Re-run training or drop "
            "that epoch's file."
        )
    ids, (pos,) = _example_positions([log.guids])
    if len(ids) != len(pos):
        ser = pd.Series(log.guids)
        dup = ser.duplicated()
        raise SchemaError(
            f"{str(path)!r}: guid {_py(ser[dup].iloc[0])!r} appears more than once "
            f"({int(dup.sum())} duplicate lines). Each example may be logged once per epoch."
        )
    order = np.empty(len(pos), dtype=np.int64)
    order[pos] = np.arange(len(pos))  # rows in guid order, in O(n)
    g = log.gold[order]
    z = log.logits[order]
    n_classes = z.shape[1]
    # The compact columns are stored as float32; computing them in float32 (as the original
    # code's torch.softmax does) is faster and loses nothing that is kept. Labels out of range
    # are reported once every file is read, so they are clipped here.
    vals = per_epoch_from_logits(z.astype(np.float32), np.clip(g, 0, max(n_classes - 1, 0)))
    cols: dict[str, Any] = {
        S.EXAMPLE_ID: pa.array(ids if ids.dtype != object else ids.tolist()),
        S.EPOCH: pa.array(np.full(len(ids), epoch, dtype=np.int32)),
        S.GOLD_PROB: pa.array(vals[S.GOLD_PROB].astype(np.float32)),
        S.MARGIN: pa.array(vals[S.MARGIN].astype(np.float32)),
        S.PRED: pa.array(vals[S.PRED]),
        S.LOSS: pa.array(vals[S.LOSS].astype(np.float32)),
        S.EL2N: pa.array(vals[S.EL2N].astype(np.float32)),
    }
    if keep_logits:
        cols[S.LOGITS] = pa.FixedSizeListArray.from_arrays(pa.array(z.reshape(-1)), n_classes)
    return _Epoch(path, n_classes, ids, g, order, pa.table(cols))


class _MixedGuids(Exception):
    """Int guids in some files and strings in others (the shard is rewritten with strings)."""


def _import_epochs(files: list[tuple[int, Path]], run_dir: Path, keep_logits: bool) -> list[_Epoch]:
    """Prepare every epoch file and write the run's dynamics shard, checking each file as it
    arrives. Two files are in flight (Arrow's reader spreads each over the cores and one file's
    single-threaded finishing work overlaps the other's parse), and each epoch is written while
    the next ones are parsed."""
    epochs: list[_Epoch] = []
    shard = "cartography"
    try:
        with ThreadPoolExecutor(max_workers=2) as pool, runstore.dynamics_writer(run_dir, shard=shard) as write:
            mixed = False
            for ep in pool.map(lambda f: _prepare_epoch(f[1], f[0], keep_logits), files):
                first = epochs[0] if epochs else ep
                if ep.n_classes != first.n_classes:
                    raise SchemaError(
                        f"{str(ep.path)!r} has {ep.n_classes} logits per line but {str(first.path)!r} "
                        f"has {first.n_classes}: all epochs must share one class count."
                    )
                bad = (ep.gold < 0) | (ep.gold >= ep.n_classes)
                if bad.any():
                    rows = np.flatnonzero(bad)
                    i = int(rows[np.argmin(ep.line[rows])])  # the first such line of the file
                    raise SchemaError(
                        f"{ep.path}:{int(ep.line[i]) + 1}: gold label {int(ep.gold[i])} is outside "
                        f"[0, {ep.n_classes}) for {ep.n_classes} logits."
                    )
                epochs.append(ep)
                mixed = mixed or ep.guids.dtype.kind != first.guids.dtype.kind
                if not mixed:
                    write(ep.table)
            if mixed:
                raise _MixedGuids  # drops the partly written shard
    except _MixedGuids:
        for ep in epochs:
            ep.restring()
        runstore.save_dynamics(run_dir, pa.concat_tables([ep.table for ep in epochs]), shard=shard)
    return epochs


def _example_positions(guids: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The sorted union of every epoch's guids, and each row's position in it.

    Integer guids within a compact range (the usual ``0..n-1``) take an O(n) bitmap path;
    others are hashed.
    """
    if all(g.dtype.kind in "iu" for g in guids):
        lo = min(int(g.min()) for g in guids)
        hi = max(int(g.max()) for g in guids)
        if hi - lo < 4 * max(len(g) for g in guids) + 1024:
            present = np.zeros(hi - lo + 1, dtype=bool)
            for g in guids:
                present[g - lo] = True
            lut = np.cumsum(present, dtype=np.int64) - 1
            return np.flatnonzero(present).astype(np.int64) + lo, [lut[g - lo] for g in guids]
    all_ids = pd.unique(np.concatenate(guids))
    ex_ids = np.sort(all_ids) if all_ids.dtype.kind in "iu" else np.array(sorted(all_ids, key=str), dtype=object)
    index = pd.Index(ex_ids)
    return ex_ids, [index.get_indexer(g) for g in guids]


def export_cartography(run_dir: str | os.PathLike[str], log_dir: str | os.PathLike[str]) -> list[Path]:
    """Write a run's dynamics back as ``dynamics_epoch_N.jsonl`` files (needs stored logits).

    Floats are written with Python's shortest round-trip representation, so importing the
    export reproduces the logits bit for bit.
    """
    dyn = runstore.load_dynamics(run_dir, columns=[S.LOGITS])
    if S.LOGITS not in dyn.column_names:
        raise SchemaError(
            f"The run {str(run_dir)!r} stores no full logits (only compact dynamics), so it cannot be "
            "exported to the cartography format. Record with `keep_logits=True`."
        )
    examples = runstore.load_examples(run_dir, columns=[S.LABEL])
    label_of = pd.Series(examples[S.LABEL].to_numpy(dtype=np.int64, na_value=-1),
                         index=examples[S.EXAMPLE_ID].to_numpy())
    out = Path(log_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = dyn.column(S.EXAMPLE_ID).to_pylist()
    epochs = dyn.column(S.EPOCH).to_numpy()
    z_col = dyn.column(S.LOGITS).combine_chunks()
    width = z_col.type.list_size if pa.types.is_fixed_size_list(z_col.type) else None
    z = z_col.flatten().to_numpy().reshape(len(ids), -1) if width else np.array(z_col.to_pylist())
    gold = label_of.reindex(ids).to_numpy()
    unknown = pd.isna(gold)
    if unknown.any():
        raise SchemaError(
            f"{int(unknown.sum())} dynamics rows of {str(run_dir)!r} have ids that examples.parquet "
            f"lacks (e.g. {_py(ids[int(np.flatnonzero(unknown)[0])])!r}); fix the run before exporting."
        )
    written = []
    for e in np.unique(epochs):
        rows = np.flatnonzero(epochs == e)
        key = f"logits_epoch_{int(e)}"
        path = out / f"dynamics_epoch_{int(e)}.jsonl"
        with runstore.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for r in rows:
                guid = ids[r]
                fh.write(json.dumps({"guid": guid, key: z[r].tolist(), "gold": int(gold[r])}) + "\n")
        written.append(path)
    return written
