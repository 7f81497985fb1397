"""Read and write a run directory (the documented format in ``docs/run-format.md``).

A run is a directory of open formats: ``run.json`` (metadata), ``examples.parquet`` (one row per
example), ``dynamics/*.parquet`` (a Parquet dataset, one row per example and epoch),
``features/<split>.npy`` + ``features/<split>.ids.parquet``, ``logits/<split>.npy`` + ids, and the
analysed ``table.parquet``. Every write goes to a temporary file in the same directory and is
renamed into place, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from analysis import schema as S
from analysis.schema import SchemaError

__all__ = [
    "RunMeta",
    "atomic_path",
    "clean_stale_temps",
    "default_mode",
    "load_run_meta",
    "save_run_meta",
    "load_examples",
    "save_examples",
    "load_dynamics",
    "save_dynamics",
    "dynamics_writer",
    "load_table",
    "save_table",
    "save_array_with_ids",
    "load_array_with_ids",
    "save_features",
    "load_features",
    "save_logits",
    "load_logits",
    "list_array_splits",
]


# ---- atomic writes ------------------------------------------------------------------------------


_TEMP_OWNER = re.compile(r"^(\d+)-[A-Za-z0-9_]+$")
_LEGACY_TEMP = re.compile(r"^[A-Za-z0-9_]{8}$")
OWNED_TEMP_AGE_S = 7 * 86400.0
"""Age after which a temporary counts as stale even if a process with its pid runs (pid reuse)."""
LEGACY_TEMP_AGE_S = 3600.0
"""Age after which a hidden temporary without an owner pid (older versions) counts as stale."""


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(*, directory: bool = False) -> int:
    """Permission bits a plain ``open``/``mkdir`` would give: 0o644 / 0o755 under umask 022."""
    return (0o777 if directory else 0o666) & ~_umask()


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def temp_prefix(name: str) -> str:
    """Prefix of this process's hidden temporaries for ``name``: ``.NAME.PID-``."""
    return f".{name}.{os.getpid()}-"


def clean_stale_temps(
    directory: Path, name: str | None = None, *, suffix: str = ".tmp",
    protect: Sequence[str] = (S.FLAGS_FILE, S.FLAGS_FILE + "-wal"),
) -> list[Path]:
    """Remove hidden temporaries ``.NAME.PID-XXXX<suffix>`` left in ``directory`` by a killed writer.

    ``name`` None matches the temporaries of any file name.

    A temporary counts as stale when the process in its name is gone (a writer still running, in
    this process or another, keeps its file) or it is older than :data:`OWNED_TEMP_AGE_S` (the
    pid was reused), or, for names without a pid written by older versions, when it is older than
    :data:`LEGACY_TEMP_AGE_S`. Pids are only meaningful on one
    machine: two machines writing one run over a network share may not rely on this. A stale
    folder holding one of ``protect`` (a review journal caught mid-move) is left alone.
    """
    removed: list[Path] = []
    prefix = f".{name}." if name is not None else "."
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(prefix) or not entry.name.endswith(suffix):
            continue
        rest = entry.name[len(prefix): len(entry.name) - len(suffix)]
        if name is None:
            rest = rest.rsplit(".", 1)[-1]
        owner = _TEMP_OWNER.match(rest)
        try:
            if owner:
                stale = (not _pid_alive(int(owner.group(1)))
                         or now - entry.stat(follow_symlinks=False).st_mtime > OWNED_TEMP_AGE_S)
            elif _LEGACY_TEMP.match(rest):
                stale = now - entry.stat(follow_symlinks=False).st_mtime > LEGACY_TEMP_AGE_S
            else:
                continue
            if not stale:
                continue
            if entry.is_dir(follow_symlinks=False):
                if any(os.path.lexists(os.path.join(entry.path, keep)) for keep in protect):
                    continue
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue  # another writer removed it first, or it is not ours to remove
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Readers never see a partial file: either the old file or the complete new one. The file gets
    the permissions a plain ``open`` would (the umask applies), and stale temporaries of a killed
    earlier write in the same folder are removed first (:func:`clean_stale_temps`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target.name), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, default_mode())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _write_parquet(
    table: pa.Table, path: Path, *, dictionary: bool = True, compression: str = "zstd"
) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=compression, use_dictionary=dictionary)


def _write_json(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def _run_dir(run_dir: str | os.PathLike[str], *, must_exist: bool = True) -> Path:
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"Run directory {str(path)!r} is a file, not a directory. Pass the run's folder."
        )
    if must_exist and not path.is_dir():
        raise FileNotFoundError(
            f"Run directory {str(path)!r} does not exist. Create one with "
            "`datamap import-cartography LOG_DIR RUN_DIR` or `DynamicsRecorder.save(RUN_DIR)`."
        )
    return path


# ---- run.json -------------------------------------------------------------------------------------


@dataclass
class RunMeta:
    """Contents of ``run.json``.

    Attributes
    ----------
    class_names : list of str
        Name of each class, indexed by the integer label.
    n_epochs : int
        Number of epochs recorded in ``dynamics/``.
    source : str
        What produced the logs: ``forward_pass`` (logits of the training step, as the original
        cartography code), ``eval_pass`` (an evaluation pass over the training set at the end of
        each epoch), ``cartography_import`` or ``synthetic``.
    task : str
        Free-form task name.
    """

    class_names: list[str]
    n_epochs: int
    source: str = S.SOURCE_FORWARD_PASS
    task: str = ""
    schema_version: int = S.SCHEMA_VERSION
    created_at: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def validate(self, *, where: str = "run.json") -> RunMeta:
        """Check every field's type and value; ``where`` names the file in the errors."""
        version = self.schema_version
        if isinstance(version, bool) or not isinstance(version, int) or version not in S.SUPPORTED_SCHEMA_VERSIONS:
            raise SchemaError(
                f"{where} has schema_version {_short(version)}, but this version of datamap "
                f"reads {sorted(S.SUPPORTED_SCHEMA_VERSIONS)}. Upgrade datamap "
                "(`pip install -U datamap`) or re-create the run."
            )
        if not isinstance(self.class_names, list) or not self.class_names:
            raise SchemaError(
                f"{where}: expected `class_names` to be a non-empty list, got {_short(self.class_names)}."
            )
        odd = [v for v in self.class_names if not isinstance(v, str)]
        if odd:
            raise SchemaError(
                f"{where}: expected `class_names` to be strings, got {_short(odd[0])} "
                f"({type(odd[0]).__name__}). Quote every class name."
            )
        if isinstance(self.n_epochs, bool) or not isinstance(self.n_epochs, int) or self.n_epochs < 0:
            raise SchemaError(f"{where}: expected `n_epochs` to be an integer >= 0, got {_short(self.n_epochs)}.")
        if not isinstance(self.source, str) or self.source not in S.SOURCES:
            raise SchemaError(f"{where}: expected `source` in {S.SOURCES}, got {_short(self.source)}.")
        for name in ("task", "created_at"):
            if not isinstance(getattr(self, name), str):
                raise SchemaError(f"{where}: expected `{name}` to be a string, got {_short(getattr(self, name))}.")
        if not isinstance(self.extra, dict):
            raise SchemaError(f"{where}: expected `extra` to be a JSON object, got {_short(self.extra)}.")
        return self


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value cut to ``limit`` characters (for error messages)."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def save_run_meta(run_dir: str | os.PathLike[str], meta: RunMeta) -> Path:
    """Write ``run.json`` atomically and return its path."""
    meta.validate()
    path = _run_dir(run_dir, must_exist=False) / S.RUN_JSON
    _write_json(asdict(meta), path)
    return path


def load_run_meta(run_dir: str | os.PathLike[str]) -> RunMeta:
    """Read and validate ``run.json``.

    Raises
    ------
    FileNotFoundError
        The directory or ``run.json`` is missing.
    SchemaError
        ``run.json`` is not valid JSON, misses keys, or has an unknown schema version.
    """
    path = _run_dir(run_dir) / S.RUN_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is missing: {str(path.parent)!r} is not a datamap run directory."
        )
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSON, UTF-8, nesting
        detail = str(exc) if not isinstance(exc, RecursionError) else "nested too deeply"
        raise SchemaError(f"{str(path)!r} is not valid JSON ({detail}). Restore or re-create it.") from exc
    if not isinstance(raw, dict):
        raise SchemaError(f"{str(path)!r}: expected a JSON object, got {type(raw).__name__}.")
    missing = [k for k in ("schema_version", "class_names", "n_epochs") if k not in raw]
    if missing:
        raise SchemaError(f"{str(path)!r} misses the keys {missing}.")
    known = {f for f in RunMeta.__dataclass_fields__}
    extra = {k: v for k, v in raw.items() if k not in known}
    kwargs = {k: v for k, v in raw.items() if k in known}
    if not isinstance(kwargs.setdefault("extra", {}), dict):
        raise SchemaError(f"{str(path)!r}: expected `extra` to be a JSON object, got {_short(kwargs['extra'])}.")
    kwargs["extra"] = {**kwargs["extra"], **extra}
    meta = RunMeta(**kwargs)
    # Version first: an unknown version may have other fields.
    return meta.validate(where=repr(str(path)))


# ---- examples.parquet -------------------------------------------------------------------------------


def _check_ids(ids: pd.Series | NDArray[Any], where: str) -> None:
    ser = pd.Series(ids) if not isinstance(ids, pd.Series) else ids
    if ser.isna().any():
        n = int(ser.isna().sum())
        raise SchemaError(f"{where}: {n} rows have a missing `example_id`. Every row needs an id.")
    if ser.dtype.kind in "fcbmM":
        raise SchemaError(
            f"{where}: `example_id` must hold ints or strings, got dtype {ser.dtype} "
            f"(e.g. {_short(ser.iloc[0]) if len(ser) else 'no rows'})."
        )
    if ser.dtype.kind not in "iu" and not isinstance(ser.dtype, pd.StringDtype):
        kinds = ser.dropna().map(type)
        odd = ~kinds.isin([str, int, np.str_, np.int64])
        if odd.any():
            i = int(np.flatnonzero(odd.to_numpy())[0])
            raise SchemaError(
                f"{where}: `example_id` must hold ints or strings, but row {i} holds "
                f"{_short(ser.dropna().iloc[i])} ({kinds.iloc[i].__name__})."
            )
    dup = ser.duplicated(keep=False)
    if dup.any():
        first = ser[dup].unique()[:5].tolist()
        raise SchemaError(
            f"{where}: `example_id` must be unique, but {int(ser[dup].nunique())} ids repeat "
            f"(e.g. {first}). Give each example its own id."
        )


def _check_splits(df: pd.DataFrame, where: str) -> None:
    """Every row names its split with a non-empty string."""
    split = df[S.SPLIT]
    if isinstance(split.dtype, pd.CategoricalDtype):
        split = split.astype(object)
    if isinstance(split.dtype, pd.StringDtype):
        bad = (split.isna() | (split == "")).to_numpy(dtype=bool)
    else:
        bad = ~np.fromiter((isinstance(v, str) and v != "" for v in split), dtype=bool, count=len(split))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SchemaError(
            f"{where}: `split` must be a non-empty string on every row, but {int(bad.sum())} rows "
            f"have none (e.g. example_id {_short(df[S.EXAMPLE_ID].iloc[i])}: {_short(split.iloc[i])}). "
            "Name each row's split (train, test, ood:<name>)."
        )


def validate_examples(df: pd.DataFrame, *, n_classes: int | None, where: str) -> pd.DataFrame:
    """Check an examples frame against the contract and return it with normalised dtypes."""
    if S.EXAMPLE_ID not in df.columns:
        raise SchemaError(f"{where}: column `example_id` is missing (columns: {list(df.columns)}).")
    _check_ids(df[S.EXAMPLE_ID], where)
    df = df.copy()
    if S.SPLIT not in df.columns:
        df[S.SPLIT] = S.TRAIN_SPLIT
    _check_splits(df, where)
    df[S.SPLIT] = df[S.SPLIT].astype(str)
    if S.LABEL not in df.columns:
        df[S.LABEL] = pd.array([pd.NA] * len(df), dtype="Int64")
    else:
        lab = df[S.LABEL]
        if not (pd.api.types.is_integer_dtype(lab) or lab.isna().all()):
            as_num = pd.to_numeric(lab, errors="coerce")
            bad = lab.notna() & (as_num.isna() | (as_num % 1 != 0))
            if bad.any():
                raise SchemaError(
                    f"{where}: `label` must hold integer class indices; row {int(np.flatnonzero(bad)[0])} "
                    f"has {lab[bad].iloc[0]!r}."
                )
            lab = as_num
        df[S.LABEL] = lab.astype("Int64")
        if n_classes is not None:
            labs = df[S.LABEL].dropna()
            out = labs[(labs < 0) | (labs >= n_classes)]
            if len(out):
                raise SchemaError(
                    f"{where}: labels must lie in [0, {n_classes}) (run.json lists {n_classes} "
                    f"classes), but {len(out)} rows have e.g. {int(out.iloc[0])}. "
                    "Fix the labels or `class_names`."
                )
    return df


def save_examples(run_dir: str | os.PathLike[str], examples: pd.DataFrame) -> Path:
    """Write ``examples.parquet`` atomically (validated: unique ids, integer labels)."""
    run = _run_dir(run_dir, must_exist=False)
    meta_path = run / S.RUN_JSON
    n_classes = load_run_meta(run).n_classes if meta_path.exists() else None
    df = validate_examples(examples, n_classes=n_classes, where="examples")
    path = run / S.EXAMPLES_FILE
    _write_parquet(pa.Table.from_pandas(df, preserve_index=False), path)
    return path


def load_examples(run_dir: str | os.PathLike[str], *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read ``examples.parquet`` (validated). ``columns`` limits what is read (ids always come)."""
    run = _run_dir(run_dir)
    path = run / S.EXAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing: every run needs its examples table.")
    cols = None
    if columns is not None:
        names = set(pq.read_schema(path).names)
        cols = [S.EXAMPLE_ID] + [c for c in columns if c != S.EXAMPLE_ID and c in names]
    try:
        df = pq.read_table(path, columns=cols, memory_map=True).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"{str(path)!r} is not a readable Parquet file ({exc}).") from exc
    meta = load_run_meta(run)
    return validate_examples(df, n_classes=meta.n_classes, where=str(path))


# ---- dynamics/ (long Parquet dataset) -------------------------------------------------------------


def _dynamics_files(run: Path) -> list[Path]:
    d = run / S.DYNAMICS_DIR
    return sorted(p for p in d.glob("*.parquet") if not p.name.startswith(".")) if d.is_dir() else []


def save_dynamics(
    run_dir: str | os.PathLike[str], dynamics: pa.Table | pd.DataFrame, *, shard: str = "part-0"
) -> Path:
    """Write one shard of the dynamics dataset: ``dynamics/<shard>.parquet``.

    Several shards (one per rank, or per epoch) are normal; :func:`load_dynamics` reads them all.
    """
    table = dynamics if isinstance(dynamics, pa.Table) else pa.Table.from_pandas(
        dynamics, preserve_index=False
    )
    missing = [c for c in S.DYNAMICS_REQUIRED if c not in table.column_names]
    if missing:
        raise SchemaError(f"dynamics shard {shard!r} misses the required columns {missing}.")
    if any(c in shard for c in "/\\") or shard.startswith("."):
        raise ValueError(f"Expected a plain file stem for `shard`, got {shard!r}.")
    path = _run_dir(run_dir, must_exist=False) / S.DYNAMICS_DIR / f"{shard}.parquet"
    # Numbers barely repeat: dictionary encoding would cost time and save nothing. LZ4 reads
    # about 3x faster than zstd for ~35% more bytes; dynamics are read on every analysis.
    _write_parquet(table, path, dictionary=False, compression="lz4")
    return path


@contextlib.contextmanager
def dynamics_writer(
    run_dir: str | os.PathLike[str], *, shard: str = "part-0"
) -> Iterator[Any]:
    """Write one dynamics shard piece by piece (e.g. an epoch at a time, as it is ready).

    Yields a function taking an Arrow table; every piece must have the first piece's schema.
    The shard appears only when the block completes: on an error nothing is left behind.
    Same encoding as :func:`save_dynamics`.
    """
    if any(c in shard for c in "/\\") or shard.startswith("."):
        raise ValueError(f"Expected a plain file stem for `shard`, got {shard!r}.")
    path = _run_dir(run_dir, must_exist=False) / S.DYNAMICS_DIR / f"{shard}.parquet"
    state: dict[str, Any] = {}

    def write(table: pa.Table) -> None:
        writer = state.get("writer")
        if writer is None:
            missing = [c for c in S.DYNAMICS_REQUIRED if c not in table.column_names]
            if missing:
                raise SchemaError(f"dynamics shard {shard!r} misses the required columns {missing}.")
            writer = state["writer"] = pq.ParquetWriter(
                state["tmp"], table.schema, compression="lz4", use_dictionary=False
            )
        elif not table.schema.equals(writer.schema):
            raise SchemaError(
                f"dynamics shard {shard!r}: a piece has schema {table.schema} but the first had "
                f"{writer.schema}; write every piece with the same columns and types."
            )
        writer.write_table(table)

    with atomic_path(path) as tmp:
        state["tmp"] = tmp
        try:
            yield write
        finally:
            if state.get("writer") is not None:
                state["writer"].close()
        if state.get("writer") is None:
            raise SchemaError(f"dynamics shard {shard!r}: nothing was written.")


def _check_dynamics_types(schema: pa.Schema, path: Path) -> None:
    """Each known dynamics column has the type the format gives it (docs/run-format.md)."""
    def numeric(t: pa.DataType) -> bool:
        return pa.types.is_integer(t) or pa.types.is_floating(t)

    checks = {
        S.EXAMPLE_ID: (lambda t: pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t),
                       "ints or strings"),
        S.EPOCH: (pa.types.is_integer, "integers"),
        S.PRED: (numeric, "integer class indices"),
        S.LOGITS: (lambda t: (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
                   and numeric(t.value_type), "lists of numbers"),
        **{name: (numeric, "numbers") for name in (S.GOLD_PROB, S.MARGIN, S.LOSS, S.EL2N)},
    }
    for name, (ok, what) in checks.items():
        if name in schema.names:
            kind = schema.field(name).type
            kind = kind.value_type if pa.types.is_dictionary(kind) else kind
            if not ok(kind):
                raise SchemaError(
                    f"{str(path)!r}: dynamics column `{name}` must hold {what}, got type {kind}."
                )


def load_dynamics(
    run_dir: str | os.PathLike[str], *, columns: Sequence[str] | None = None
) -> pa.Table:
    """Read every shard of ``dynamics/`` as one Arrow table.

    Parameters
    ----------
    columns : sequence of str, optional
        Columns to read besides ``example_id`` and ``epoch``; optional columns absent from the
        files are skipped. Defaults to all columns.

    Raises
    ------
    SchemaError
        No shard, a required column missing, shards with incompatible columns, or an unreadable file.
    """
    run = _run_dir(run_dir)
    files = _dynamics_files(run)
    if not files:
        raise SchemaError(
            f"{str(run / S.DYNAMICS_DIR)!r} holds no .parquet shard: the run has no training dynamics."
        )
    tables = []
    for f in files:
        try:
            schema = pq.read_schema(f)
            names = schema.names
            missing = [c for c in S.DYNAMICS_REQUIRED if c not in names]
            if missing:
                raise SchemaError(f"{str(f)!r} misses the required dynamics columns {missing}.")
            _check_dynamics_types(schema, f)
            want = None
            if columns is not None:
                want = [S.EXAMPLE_ID, S.EPOCH] + [
                    c for c in columns if c not in (S.EXAMPLE_ID, S.EPOCH) and c in names
                ]
            # Memory-mapped reads skip a copy of every file into fresh buffers: ~3x faster here.
            tables.append(pq.read_table(f, columns=want, memory_map=True))
        except (pa.ArrowInvalid, OSError) as exc:
            raise SchemaError(f"{str(f)!r} is not a readable Parquet file ({exc}).") from exc
    if len(tables) == 1:
        return tables[0]
    common = set(tables[0].column_names).intersection(*(t.column_names for t in tables[1:]))
    order = [c for c in tables[0].column_names if c in common]
    try:
        return pa.concat_tables([t.select(order) for t in tables], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SchemaError(
            f"The dynamics shards in {str(run / S.DYNAMICS_DIR)!r} have incompatible column types "
            f"({exc}). Write every shard with the same id and label types."
        ) from exc


# ---- arrays with ids: features/ and logits/ -----------------------------------------------------------


def save_array_with_ids(
    run_dir: str | os.PathLike[str],
    kind: str,
    split: str,
    example_ids: Sequence[Any] | NDArray[Any],
    array: NDArray[Any],
) -> Path:
    """Write ``<kind>/<split>.npy`` (float32) and ``<kind>/<split>.ids.parquet`` row-aligned."""
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise ValueError(f"Expected `{kind}` to have shape (n_examples, d), got {arr.shape}.")
    ids = pd.Series(np.asarray(example_ids), name=S.EXAMPLE_ID)
    if len(ids) != arr.shape[0]:
        raise ValueError(
            f"Expected one id per row of `{kind}`: got {len(ids)} ids for {arr.shape[0]} rows."
        )
    _check_ids(ids, f"{kind}/{split}")
    if not np.isfinite(arr).all():
        raise ValueError(f"`{kind}` for split {split!r} contains NaN or inf values.")
    safe = split.replace(":", "__").replace("/", "_")
    base = _run_dir(run_dir, must_exist=False) / kind
    npy = base / f"{safe}.npy"
    with atomic_path(npy) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr.astype(np.float32, copy=False))
    _write_parquet(pa.table({S.EXAMPLE_ID: ids.to_numpy(), S.SPLIT: [split] * len(ids)}), base / f"{safe}.ids.parquet")
    return npy


def list_array_splits(run_dir: str | os.PathLike[str], kind: str) -> list[str]:
    """Names of the splits that have ``<kind>/<split>.npy`` stored."""
    base = _run_dir(run_dir) / kind
    if not base.is_dir():
        return []
    out = []
    for p in sorted(base.glob("*.ids.parquet")):
        out.append(pq.read_table(p, columns=[S.SPLIT]).column(0)[0].as_py() if pq.read_metadata(p).num_rows else p.name[: -len(".ids.parquet")].replace("__", ":"))
    return out


def load_array_with_ids(
    run_dir: str | os.PathLike[str], kind: str, split: str, *, mmap: bool = True
) -> tuple[NDArray[Any], NDArray[np.float32]]:
    """Read ``(example_ids, array)`` for one split; the array is memory-mapped by default."""
    safe = split.replace(":", "__").replace("/", "_")
    base = _run_dir(run_dir) / kind
    npy, ids_path = base / f"{safe}.npy", base / f"{safe}.ids.parquet"
    if not npy.is_file() or not ids_path.is_file():
        raise FileNotFoundError(f"No stored {kind} for split {split!r} in {str(base)!r}.")
    try:
        arr = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SchemaError(f"{str(npy)!r} is not a readable .npy array ({exc}).") from exc
    try:
        ids = pq.read_table(ids_path, columns=[S.EXAMPLE_ID]).column(0).to_numpy(zero_copy_only=False)
    except (ValueError, OSError, pa.ArrowException, KeyError) as exc:
        raise SchemaError(
            f"{str(ids_path)!r} is not a readable ids file ({exc}); it needs an `example_id` column."
        ) from exc
    if arr.ndim != 2 or arr.shape[0] != len(ids):
        raise SchemaError(
            f"{str(npy)!r} has shape {arr.shape} but {str(ids_path)!r} lists {len(ids)} ids; "
            "they must be row-aligned."
        )
    _check_ids(pd.Series(ids), repr(str(ids_path)))
    return ids, arr


def save_features(run_dir: str | os.PathLike[str], split: str, example_ids: Any, features: NDArray[Any]) -> Path:
    """Store penultimate-layer features ``(n_examples, n_features)`` for one split."""
    return save_array_with_ids(run_dir, S.FEATURES_DIR, split, example_ids, features)


def load_features(run_dir: str | os.PathLike[str], split: str, *, mmap: bool = True) -> tuple[NDArray[Any], NDArray[np.float32]]:
    """Return ``(example_ids, features)`` for one split."""
    return load_array_with_ids(run_dir, S.FEATURES_DIR, split, mmap=mmap)


def save_logits(run_dir: str | os.PathLike[str], split: str, example_ids: Any, logits: NDArray[Any]) -> Path:
    """Store final-model logits ``(n_examples, n_classes)`` for one split."""
    return save_array_with_ids(run_dir, S.LOGITS_DIR, split, example_ids, logits)


def load_logits(run_dir: str | os.PathLike[str], split: str, *, mmap: bool = True) -> tuple[NDArray[Any], NDArray[np.float32]]:
    """Return ``(example_ids, logits)`` for one split."""
    return load_array_with_ids(run_dir, S.LOGITS_DIR, split, mmap=mmap)


# ---- table.parquet ------------------------------------------------------------------------------------


def save_table(run_dir: str | os.PathLike[str], table: pd.DataFrame) -> Path:
    """Write the analysed per-example ``table.parquet`` atomically."""
    _check_ids(table[S.EXAMPLE_ID], "table")
    path = _run_dir(run_dir) / S.TABLE_FILE
    _write_parquet(pa.Table.from_pandas(table, preserve_index=False), path)
    return path


TABLE_REQUIRED = (S.EXAMPLE_ID, S.SPLIT)
"""Columns every ``table.parquet`` has (the rest depends on what the run stores)."""


def load_table(run_dir: str | os.PathLike[str], *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read ``table.parquet`` (run ``datamap analyze RUN_DIR`` first).

    Raises
    ------
    SchemaError
        Unreadable file, a column of :data:`TABLE_REQUIRED` missing, ids missing, repeated or of
        another type than int/str, or rows without a split.
    """
    path = _run_dir(run_dir) / S.TABLE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is missing. Build it with `datamap analyze {str(path.parent)}`."
        )
    fix = f"Rebuild it with `datamap analyze {str(path.parent)}`."
    try:
        arrow = pq.read_table(path, columns=list(columns) if columns else None, memory_map=True)
    except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
        raise SchemaError(f"{str(path)!r} is corrupt ({exc}). {fix}") from exc
    missing = [c for c in TABLE_REQUIRED if c not in arrow.column_names and (columns is None or c in columns)]
    if missing:
        raise SchemaError(f"{str(path)!r} misses the columns {missing}. {fix}")
    try:
        _check_table_keys(arrow, repr(str(path)))
        table = arrow.to_pandas()
    except SchemaError as exc:
        raise SchemaError(f"{exc} {fix}") from exc
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise SchemaError(f"{str(path)!r} is corrupt ({exc}). {fix}") from exc
    return table


def _unique(ids: pa.ChunkedArray) -> bool:
    """Whether the (non-null) ids are unique; increasing integer ids skip the hash table."""
    if pa.types.is_integer(ids.type):
        values = ids.to_numpy()
        if len(values) < 2 or bool(np.all(values[1:] > values[:-1])):
            return True
    return len(pc.unique(ids)) == len(ids)


def _check_table_keys(table: pa.Table, where: str) -> None:
    """Ids of int or string type, present and unique; a non-empty string split on every row."""
    names = table.column_names
    if S.EXAMPLE_ID in names:
        ids = table.column(S.EXAMPLE_ID)
        kind = ids.type.value_type if pa.types.is_dictionary(ids.type) else ids.type
        if not (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise SchemaError(f"{where}: `example_id` must hold ints or strings, got type {ids.type}.")
        if ids.null_count or not _unique(ids):
            _check_ids(ids.to_pandas(), where)  # names the problem
    if S.SPLIT in names:
        split = table.column(S.SPLIT)
        kind = split.type.value_type if pa.types.is_dictionary(split.type) else split.type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            raise SchemaError(f"{where}: `split` must hold strings, got type {split.type}.")
        if split.null_count or pc.any(pc.equal(split.cast(pa.string()), "")).as_py():
            _check_splits(table.select([c for c in (S.EXAMPLE_ID, S.SPLIT) if c in names]).to_pandas(), where)
