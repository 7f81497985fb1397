"""Export a filtered or selected subset of the example table, with a manifest that reproduces it.

An export writes two files atomically into ``RUN_DIR/exports/`` (or beside ``out_path``):
``<name>.csv`` or ``<name>.parquet``, and ``<name>.manifest.json`` recording the datamap version,
the source run (path and hashes of ``run.json`` and ``table.parquet``), the filter and the
selection, row counts, the curation options, the flags journal size, the columns and the hash of
the output. Re-applying the manifest's filter and selection to the same table gives the same rows
(:func:`manifest_mask`).

A *curated* export is a training set: train split only, rows diagnosed ``suspect_mislabeled`` or
``suspect_ood`` dropped unless a person flagged them ``keep`` or relabelled them, rows flagged
``mislabeled`` (without a relabel) or ``ood`` dropped, relabels applied and the label as given kept
in ``given_label`` (:func:`curate_training_set`). The rules are documented in
``docs/review-and-export.md``.

CSV output is safe to open in a spreadsheet: text cells that start with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return get a leading ``'`` (OWASP, "CSV Injection").
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import ArrayLike, NDArray

from analysis import schema as S
from analysis.diagnosis import SUSPECT_MISLABELED, SUSPECT_OOD
from analysis.filters import FilterSpec, apply_filter
from analysis.flags import (
    FLAG,
    FLAG_KEEP,
    FLAG_MISLABELED,
    FLAG_OOD,
    NEW_LABEL,
    FlagJournal,
    apply_flags,
)
from analysis.runstore import atomic_path, load_run_meta

__all__ = [
    "ExportFormat",
    "ExportResult",
    "MANIFEST_VERSION",
    "MAX_LISTED_IDS",
    "DEFAULT_DROP_DIAGNOSES",
    "DEFAULT_DROP_FLAGS",
    "KEEP_FLAG",
    "export_subset",
    "curate_training_set",
    "to_csv_bytes",
    "binary_columns",
    "manifest_mask",
    "ids_digest",
    "rows_fingerprint",
]

ExportFormat = Literal["csv", "parquet"]
_FORMATS: tuple[str, ...] = get_args(ExportFormat)

MANIFEST_VERSION = 1
MAX_LISTED_IDS = 10_000
"""Selections up to this size are listed in the manifest; larger ones are recorded by digest."""

DEFAULT_DROP_DIAGNOSES: tuple[str, ...] = (SUSPECT_MISLABELED, SUSPECT_OOD)
DEFAULT_DROP_FLAGS: tuple[str, ...] = (FLAG_MISLABELED, FLAG_OOD)
KEEP_FLAG = FLAG_KEEP
"""A row flagged ``keep`` is never dropped for its diagnosis."""

_INJECTION_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass
class ExportResult:
    """What :func:`export_subset` wrote.

    Attributes
    ----------
    path : Path
        The data file.
    manifest_path : Path
        The manifest beside it.
    manifest : dict
        The manifest's content.
    data : bytes
        The data file's bytes (for a download button).
    manifest_bytes : bytes
        The manifest file's bytes (UTF-8 JSON), as written.
    """

    path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    data: bytes = field(repr=False)
    manifest_bytes: bytes = field(default=b"", repr=False)

    @property
    def n_rows(self) -> int:
        """Rows exported."""
        return int(self.manifest["rows"]["exported"])

    @property
    def zip_name(self) -> str:
        """File name of :meth:`zip_bytes`: the data file's stem with ``.zip``."""
        return f"{self.path.stem}.zip"

    def zip_bytes(self) -> bytes:
        """The data file and its manifest as one ZIP archive (for a single download).

        The archive holds two members named as the files on disk (``<name>.csv`` or
        ``<name>.parquet`` and ``<name>.manifest.json``) with their exact bytes, so the
        manifest's ``output.sha256`` checks the data member.
        """
        import zipfile

        manifest = self.manifest_bytes or (
            json.dumps(self.manifest, indent=2, ensure_ascii=False, default=_json_default) + "\n"
        ).encode("utf-8")
        buf = io.BytesIO()
        stamp = _zip_time(self.manifest.get("created_at"))
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, payload in ((self.path.name, self.data), (self.manifest_path.name, manifest)):
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, payload)
        return buf.getvalue()


def _zip_time(created_at: Any) -> tuple[int, int, int, int, int, int]:
    """The export's creation time as a ZIP member time (ZIP cannot store years before 1980)."""
    try:
        t = _dt.datetime.fromisoformat(str(created_at))
    except ValueError:
        return (1980, 1, 1, 0, 0, 0)
    if t.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (t.year, t.month, t.day, t.hour, t.minute, t.second)


# ---- helpers ------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _datamap_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("datamap")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def _plain_id(v: Any) -> int | str:
    if isinstance(v, (np.integer, int)) and not isinstance(v, (bool, np.bool_)):
        return int(v)
    return str(v)


def ids_digest(ids: Iterable[Any]) -> str:
    """SHA-256 of ids: each id as JSON (``7`` or ``"a"``), one per line, in the order given."""
    h = hashlib.sha256()
    for v in ids:
        h.update(json.dumps(_plain_id(v)).encode())
        h.update(b"\n")
    return h.hexdigest()


def rows_fingerprint(rows: ArrayLike, **parts: Any) -> str:
    """A digest of which rows an export would take and of anything else its content depends on.

    Cheap enough to compute on every dashboard rerun (a million rows: well under 10 ms): the
    boolean mask is packed to bits and hashed together with ``parts`` as sorted JSON. Two calls
    agree exactly when the masks are equal and the parts are equal, so a prepared download whose
    fingerprint no longer matches the current one is stale.

    Parameters
    ----------
    rows : ndarray of bool, shape (n_rows,)
        The rows the export takes (filter and selection applied).
    **parts
        JSON-safe values (thresholds, journal size, scope, ...).

    Returns
    -------
    str
        Hex SHA-256.

    Examples
    --------
    >>> import numpy as np
    >>> a = rows_fingerprint(np.array([True, False]), journal_rows=3)
    >>> a == rows_fingerprint(np.array([True, False]), journal_rows=3)
    True
    >>> a == rows_fingerprint(np.array([False, True]), journal_rows=3)
    False
    """
    mask = np.asarray(rows)
    if mask.dtype != bool or mask.ndim != 1:
        raise ValueError(f"Expected `rows` to be a 1-D boolean array, got {mask.dtype} {mask.shape}.")
    h = hashlib.sha256()
    h.update(str(len(mask)).encode() + b"\n")
    h.update(np.packbits(mask).tobytes())
    h.update(json.dumps(parts, sort_keys=True, default=_json_default).encode())
    return h.hexdigest()


def binary_columns(df: pd.DataFrame) -> list[str]:
    """Columns holding bytes (e.g. PNG images): Arrow binary types or objects that are bytes."""
    out = []
    for col in df.columns:
        dtype = df[col].dtype
        if isinstance(dtype, pd.ArrowDtype) and (
            pa.types.is_binary(dtype.pyarrow_dtype) or pa.types.is_large_binary(dtype.pyarrow_dtype)
        ):
            out.append(col)
        elif pd.api.types.is_object_dtype(dtype):
            first = df[col].dropna().head(100)
            if len(first) and any(isinstance(v, (bytes, bytearray, memoryview)) for v in first):
                out.append(col)
    return out


def _is_text_column(ser: pd.Series) -> bool:
    dtype = ser.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return not (pd.api.types.is_numeric_dtype(dtype.categories.dtype))
    return pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype)


def _neutralise(ser: pd.Series) -> pd.Series:
    """Prefix ``'`` to the string cells of ``ser`` that a spreadsheet would run as a formula."""
    if isinstance(ser.dtype, pd.StringDtype):  # vectorised path for pandas' string dtype
        danger = ser.str.startswith(_INJECTION_PREFIXES).to_numpy(dtype=bool, na_value=False)
        if not danger.any():
            return ser
        return ser.mask(danger, "'" + ser)
    if isinstance(ser.dtype, pd.CategoricalDtype):
        ser = ser.astype(object)
    values = ser.to_numpy(dtype=object, na_value=None)
    is_str = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
    if not is_str.any():
        return ser
    strs = pd.Series(values[is_str], dtype="str")
    danger = strs.str.startswith(_INJECTION_PREFIXES).to_numpy(dtype=bool, na_value=False)
    if not danger.any():
        return ser
    out = values.copy()
    idx = np.flatnonzero(is_str)[danger]
    out[idx] = ["'" + v for v in values[idx]]
    return pd.Series(out, index=ser.index, name=ser.name, dtype=object)


def to_csv_bytes(df: pd.DataFrame, *, include_images: bool = False) -> bytes:
    r"""CSV bytes (UTF-8, header, no index, CRLF line ends) that are safe to open in a spreadsheet.

    Cells of text columns starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    get a leading ``'`` so that a spreadsheet shows them as text instead of running them as a
    formula (OWASP guidance on CSV injection). Numeric and boolean columns are written as they
    are (``-1.5`` stays a number). Binary columns (image bytes) are dropped unless
    ``include_images`` is true, in which case they are written base64-encoded.

    Parameters
    ----------
    df : DataFrame
    include_images : bool, default False

    Returns
    -------
    bytes

    Examples
    --------
    >>> import pandas as pd
    >>> data = to_csv_bytes(pd.DataFrame({"text": ["=1+1", "ok"], "x": [-1, 2]}))
    >>> print(data.decode().replace("\r\n", "\n"), end="")
    "text","x"
    "'=1+1",-1
    "ok",2
    """
    out = df.copy(deep=False)  # columns are replaced, never modified in place
    for col in binary_columns(out):
        if include_images:
            import base64

            out[col] = [None if v is None else base64.b64encode(bytes(v)).decode("ascii")
                        for v in out[col].to_numpy(dtype=object, na_value=None)]
        else:
            out = out.drop(columns=[col])
    for col in out.columns:
        if _is_text_column(out[col]):
            out[col] = _neutralise(out[col])
    # Column names are cells too.
    out.columns = _neutralise(pd.Series([str(c) for c in out.columns], dtype=object)).tolist()
    return _write_csv(out)


def _write_csv(df: pd.DataFrame) -> bytes:
    """Arrow's CSV writer (about 10x faster than pandas at a million rows); pandas as fallback.

    Both write CRLF line ends (RFC 4180) and quote every cell that holds a delimiter, a quote, a
    CR or an LF; Arrow quotes every text cell.
    """
    import pyarrow.csv as pacsv

    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
        plain = pa.schema([
            pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
            for f in table.schema
        ])
        buf = io.BytesIO()
        pacsv.write_csv(table.cast(plain), buf,
                        pacsv.WriteOptions(include_header=True, quoting_style="needed", eol="\r\n"))
        return buf.getvalue()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # Mixed-type object columns and nested types: pandas writes anything.
        return df.to_csv(index=False, lineterminator="\r\n").encode("utf-8")


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf, compression="zstd")
    return buf.getvalue()


# ---- curation -----------------------------------------------------------------------------------


def curate_training_set(
    table: pd.DataFrame,
    flags: pd.DataFrame | None,
    *,
    drop_diagnoses: Sequence[str] = DEFAULT_DROP_DIAGNOSES,
    drop_flags: Sequence[str] = DEFAULT_DROP_FLAGS,
    apply_relabels: bool = True,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A cleaned training set: train split only, suspects dropped, relabels applied.

    A relabel means "keep this example, with this label", so with ``apply_relabels`` a relabelled
    row survives its diagnosis and a ``mislabeled`` flag. Rules, in order:

    1. Keep rows with ``split == "train"``.
    2. Drop rows whose ``diagnosis`` is in ``drop_diagnoses``, unless flagged ``keep`` or
       relabelled.
    3. Drop rows whose flag is in ``drop_flags``, except a relabelled row flagged
       ``mislabeled`` (the relabel is its correction). A row flagged ``mislabeled`` without a
       relabel, or flagged ``ood``, is dropped.
    4. If ``apply_relabels``: ``given_label`` (a new column right after ``label``) holds the label
       as given in the run, for every row; where ``new_label`` is set, ``label`` becomes it and
       ``label_name`` the matching class name. A column ``original_label`` already in the table
       (e.g. the ground truth of a synthetic run) is carried through untouched.

    Without ``apply_relabels`` a relabel rescues nothing and labels stay as given.

    Parameters
    ----------
    table : DataFrame
        The example table; ``flag``/``new_label`` columns are used when ``flags`` is None.
    flags : DataFrame or None
        :meth:`FlagJournal.latest` (joined with :func:`apply_flags`).
    drop_diagnoses, drop_flags : sequence of str
    apply_relabels : bool, default True
    class_names : sequence of str, optional
        Class names by index (``run.json``); without them they are read off the table's own
        ``label``/``label_name`` pairs.

    Returns
    -------
    DataFrame
        The kept rows with the ``flag``, ``new_label`` and ``note`` columns.

    Raises
    ------
    ValueError
        A relabel names a class without a known name.
    """
    for name, values in (("drop_diagnoses", drop_diagnoses), ("drop_flags", drop_flags)):
        if isinstance(values, str):
            raise TypeError(f"Expected `{name}` to be a sequence of str, got the str {values!r}.")
    if flags is not None or FLAG not in table.columns:
        table = apply_flags(table, flags)
    split = table[S.SPLIT].astype(str).to_numpy() if S.SPLIT in table.columns else None
    keep = np.ones(len(table), dtype=bool) if split is None else split == S.TRAIN_SPLIT
    flag = table[FLAG]
    is_keep = flag.eq(KEEP_FLAG).to_numpy(dtype=bool, na_value=False)
    relabelled = (
        table[NEW_LABEL].notna().to_numpy(dtype=bool) if apply_relabels
        else np.zeros(len(table), dtype=bool)
    )
    if drop_diagnoses and S.DIAGNOSIS in table.columns:
        diag = table[S.DIAGNOSIS].astype(object).isin(list(drop_diagnoses)).to_numpy(dtype=bool, na_value=False)
        keep &= ~diag | is_keep | relabelled
    if drop_flags:
        dropped = flag.isin(list(drop_flags)).to_numpy(dtype=bool, na_value=False)
        corrected = flag.eq(FLAG_MISLABELED).to_numpy(dtype=bool, na_value=False) & relabelled
        keep &= ~dropped | corrected
    out = table.loc[keep].reset_index(drop=True)
    if not apply_relabels:
        return out
    given = out[S.LABEL].astype("Int64") if S.LABEL in out.columns else pd.array(
        [pd.NA] * len(out), dtype="Int64")
    if S.GIVEN_LABEL in out.columns:
        out = out.drop(columns=[S.GIVEN_LABEL])
    at = out.columns.get_loc(S.LABEL) + 1 if S.LABEL in out.columns else len(out.columns)
    out.insert(at, S.GIVEN_LABEL, given)
    relabel = out[NEW_LABEL].notna().to_numpy()
    if not relabel.any():
        return out
    names = _class_names(table, class_names)
    new_labels = out[NEW_LABEL].to_numpy(dtype=np.int64, na_value=-1)[relabel]
    unknown = sorted({int(k) for k in new_labels if k not in names})
    if unknown:
        raise ValueError(
            f"Expected a class name for every relabel, got none for classes {unknown}. Pass "
            "`class_names` (run.json's)."
        )
    label = out[S.GIVEN_LABEL].to_numpy(dtype=object, na_value=pd.NA)
    label[relabel] = new_labels
    out[S.LABEL] = pd.array(label, dtype="Int64")
    if S.LABEL_NAME in out.columns or names:
        lname = out[S.LABEL_NAME].to_numpy(dtype=object, na_value=None) if S.LABEL_NAME in out.columns else np.full(len(out), None, dtype=object)
        lname[relabel] = [names[int(k)] for k in new_labels]
        out[S.LABEL_NAME] = pd.Series(lname, dtype="str")
    return out


def _class_names(table: pd.DataFrame, class_names: Sequence[str] | None) -> dict[int, str]:
    if class_names is not None:
        return {i: str(n) for i, n in enumerate(class_names)}
    if S.LABEL_NAME not in table.columns:
        return {}
    pairs = table[[S.LABEL, S.LABEL_NAME]].dropna().drop_duplicates(subset=[S.LABEL])
    return {int(k): str(v) for k, v in zip(pairs[S.LABEL], pairs[S.LABEL_NAME], strict=True)}


# ---- export -------------------------------------------------------------------------------------


def _mask_of(table: pd.DataFrame, mask: ArrayLike | None) -> NDArray[np.bool_]:
    if mask is None:
        return np.ones(len(table), dtype=bool)
    if isinstance(mask, pd.Series):
        mask = mask.to_numpy(dtype=bool, na_value=False)
    m = np.asarray(mask)
    if m.dtype != bool or m.shape != (len(table),):
        raise ValueError(
            f"Expected `mask` to be a boolean array of shape ({len(table)},), got {m.dtype} {m.shape}."
        )
    return m


def _selection_mask(table: pd.DataFrame, selection_ids: Iterable[Any]) -> NDArray[np.bool_]:
    ids = pd.Index(list(selection_ids) if not isinstance(selection_ids, (np.ndarray, pd.Series, pd.Index)) else selection_ids)
    return np.asarray(table[S.EXAMPLE_ID].isin(ids).to_numpy(dtype=bool, na_value=False), dtype=bool)


def manifest_mask(
    table: pd.DataFrame, manifest: dict[str, Any], *, flags: pd.DataFrame | None = None
) -> NDArray[np.bool_]:
    """Re-apply a manifest's filter and selection to ``table``: the rows that were exported
    (before curation).

    Raises
    ------
    ValueError
        The selection was too large to be listed (only its digest is known).
    """
    spec = manifest["filter"]["spec"]
    mask = apply_filter(table, FilterSpec.from_dict(spec) if spec is not None else None, flags=flags)
    sel = manifest["selection"]
    if sel["count"] is not None:
        if sel["ids"] is None:
            raise ValueError(
                f"Expected the selection ids in the manifest, but its {sel['count']} ids are only "
                f"recorded by digest ({sel['ids_sha256']}); supply them to reproduce it."
            )
        mask &= _selection_mask(table, sel["ids"])
    return mask


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(".manifest"):
        raise ValueError(
            f"Expected `name` to be a plain file stem (letters, digits, '.', '_', '-'), got {name!r}."
        )
    return name


def export_subset(
    run_dir: str | os.PathLike[str],
    table: pd.DataFrame,
    mask: ArrayLike | None,
    *,
    fmt: ExportFormat,
    filter_spec: FilterSpec | None = None,
    selection_ids: Iterable[Any] | None = None,
    flags: pd.DataFrame | None = None,
    curated: bool = False,
    drop_diagnoses: Sequence[str] = DEFAULT_DROP_DIAGNOSES,
    drop_flags: Sequence[str] = DEFAULT_DROP_FLAGS,
    apply_relabels: bool = True,
    name: str | None = None,
    out_path: str | os.PathLike[str] | None = None,
    include_images: bool = False,
    overwrite: bool = False,
    context: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Write the rows of ``table`` chosen by ``mask`` (and ``selection_ids``) with a manifest.

    Parameters
    ----------
    run_dir : path-like
        The source run (for hashes, class names and the flags journal).
    table : DataFrame
        The example table (``table.parquet``).
    mask : ndarray of bool, shape (n_rows,), or None
        Rows to export (usually ``apply_filter(table, filter_spec)``); ``None``: the rows of
        ``filter_spec`` (all rows without one).
    fmt : {"csv", "parquet"}
    filter_spec : FilterSpec, optional
        The filter behind ``mask``, recorded in the manifest. The manifest also records whether
        re-applying it (with the selection) reproduces ``mask`` (``filter.reproduces_rows``).
    selection_ids : iterable, optional
        Example ids of a selection (lasso, box, table); only rows in it are exported.
    flags : DataFrame, optional
        :meth:`FlagJournal.latest`; read from the run's journal when omitted. Joined as the
        columns ``flag``, ``new_label``, ``note``.
    curated : bool, default False
        Export a cleaned training set (:func:`curate_training_set`).
    drop_diagnoses, drop_flags, apply_relabels
        Options of :func:`curate_training_set` (used when ``curated``).
    name : str, optional
        File stem; defaults to ``export-<UTC time>``.
    out_path : path-like, optional
        Write the data here instead of ``RUN_DIR/exports/<name>.<fmt>``; the manifest goes beside
        it as ``<stem>.manifest.json``.
    include_images : bool, default False
        Keep binary (image bytes) columns: as is in Parquet, base64 in CSV. Dropped by default:
        they are large and a spreadsheet cannot show them. Path-valued image columns are text and
        always kept.
    overwrite : bool, default False
        Replace existing files of the same name.
    context : mapping, optional
        Anything else the rows depend on, recorded as the manifest's ``context`` (JSON-safe
        values), e.g. the region thresholds a dashboard used when it re-derived ``region``.

    Returns
    -------
    ExportResult

    Raises
    ------
    ValueError
        Bad format, mask or name. FileExistsError: the files exist and ``overwrite`` is false.
    """
    if fmt not in _FORMATS:
        raise ValueError(f"Expected `fmt` in {_FORMATS}, got {fmt!r}.")
    if filter_spec is not None and not isinstance(filter_spec, FilterSpec):
        filter_spec = FilterSpec.from_dict(filter_spec)
    run = Path(run_dir)
    meta = load_run_meta(run)
    if S.EXAMPLE_ID not in table.columns:
        raise ValueError(f"Expected `table` to have an `{S.EXAMPLE_ID}` column.")
    journal = FlagJournal(run, check_ids=False)
    journal_rows = journal.count()
    if flags is None:
        flags = journal.latest()

    spec_mask = apply_filter(table, filter_spec, flags=flags) if filter_spec is not None else None
    if mask is None:
        rows = spec_mask if spec_mask is not None else np.ones(len(table), dtype=bool)
    else:
        rows = _mask_of(table, mask)
    n_after_filter = int(rows.sum())
    sel_list: list[Any] | None = None
    if selection_ids is not None:
        sel_list = list(dict.fromkeys(_plain_id(v) for v in selection_ids))
        sel_mask = _selection_mask(table, sel_list)
        rows = rows & sel_mask
        if spec_mask is not None:
            spec_mask = spec_mask & sel_mask
    reproduces = bool(np.array_equal(spec_mask, rows)) if spec_mask is not None else (
        filter_spec is None and mask is None
    )

    subset = apply_flags(table.loc[rows].reset_index(drop=True), flags)
    n_before_curation = len(subset)
    if curated:
        subset = curate_training_set(
            subset, None, drop_diagnoses=drop_diagnoses, drop_flags=drop_flags,
            apply_relabels=apply_relabels, class_names=meta.class_names,
        )
    dropped_binary = [] if include_images else binary_columns(subset)
    if dropped_binary:
        subset = subset.drop(columns=dropped_binary)
    data = to_csv_bytes(subset, include_images=include_images) if fmt == "csv" else _parquet_bytes(subset)

    created = _dt.datetime.now(_dt.timezone.utc)
    if out_path is not None:
        path = Path(out_path)
        stem = path.name[: -len(path.suffix)] if path.suffix else path.name
        manifest_path = path.with_name(f"{stem}.manifest.json")
    else:
        stem = _check_name(name if name is not None else "export-" + created.strftime("%Y%m%dT%H%M%S%fZ"))
        path = run / S.EXPORTS_DIR / f"{stem}.{fmt}"
        manifest_path = run / S.EXPORTS_DIR / f"{stem}.manifest.json"
    if not overwrite:
        for p in (path, manifest_path):
            if p.exists():
                raise FileExistsError(f"{str(p)!r} exists; choose another name or pass overwrite=True.")

    sel_info: dict[str, Any] = {"count": None, "ids": None, "ids_sha256": None}
    if sel_list is not None:
        sel_info = {
            "count": len(sel_list),
            "ids": sel_list if len(sel_list) <= MAX_LISTED_IDS else None,
            "ids_sha256": ids_digest(sel_list),
        }
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "datamap_version": _datamap_version(),
        "created_at": created.isoformat(timespec="seconds"),
        "source_run": {
            "path": str(run.resolve()),
            "task": meta.task,
            "run_json_sha256": _sha256_file(run / S.RUN_JSON),
            "table_sha256": _sha256_file(run / S.TABLE_FILE),
        },
        "filter": {
            "spec": filter_spec.to_dict() if filter_spec is not None else None,
            "description": filter_spec.describe() if filter_spec is not None else "all examples",
            "reproduces_rows": reproduces,
        },
        "selection": sel_info,
        "rows": {
            "table": len(table),
            "after_filter": n_after_filter,
            "after_selection": n_before_curation,
            "exported": len(subset),
        },
        "curated": {
            "enabled": bool(curated),
            "split": S.TRAIN_SPLIT if curated else None,
            "drop_diagnoses": list(drop_diagnoses) if curated else None,
            "drop_flags": list(drop_flags) if curated else None,
            "keep_flag_overrides_diagnosis": bool(curated),
            "apply_relabels": bool(apply_relabels) if curated else None,
            "relabeled": int(subset[NEW_LABEL].notna().sum()) if curated and apply_relabels else 0,
        },
        "flags": {
            "journal_rows": journal_rows,
            "examples_with_edits": int(len(flags)) if flags is not None else 0,
        },
        "context": dict(context) if context is not None else {},
        "format": fmt,
        "columns": [str(c) for c in subset.columns],
        "dropped_columns": [str(c) for c in dropped_binary],
        "output": {
            "file": path.name,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    existed = path.exists()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    try:
        with atomic_path(manifest_path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except BaseException:
        if not existed:  # never leave a data file without its manifest
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise
    return ExportResult(path=path, manifest_path=manifest_path, manifest=manifest, data=data,
                        manifest_bytes=text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")
