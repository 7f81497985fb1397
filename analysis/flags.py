"""The person's flags, relabels and notes: an append-only journal in ``RUN_DIR/flags.sqlite``.

Every edit is one new row of the ``edits`` table; rows are never updated or deleted (triggers
refuse it), so the full history of a review stays readable. The current state of an example is
the latest non-null value of each field over its rows. The store is SQLite from the standard
library in WAL mode with ``synchronous=FULL``: several processes may write at once (each write
takes the database write lock, ``BEGIN IMMEDIATE``), and :meth:`FlagJournal.add` returns only
after its transaction is committed, so an acknowledged edit survives a crash.

Encoding of a row (documented for readers without datamap in ``docs/review-and-export.md``):

========== ======================================================================================
column     meaning
========== ======================================================================================
id         journal row id, increasing in commit order
example_id the example's id with its type kept (SQLite integer or text)
flag       NULL: unchanged; ``''``: flag cleared; else one of :data:`FLAG_VALUES`
new_label  NULL: unchanged; ``-1``: relabel cleared (back to the original); else the class index
note       NULL: unchanged; ``''``: note cleared; else the note text
author     who made the edit (may be ``''``)
at         UTC time of the edit, ISO 8601 with microseconds
========== ======================================================================================
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from analysis import schema as S
from analysis.schema import SchemaError

__all__ = [
    "FLAG",
    "FLAG_VALUES",
    "FLAG_MISLABELED",
    "FLAG_OOD",
    "FLAG_AMBIGUOUS",
    "FLAG_KEEP",
    "NEW_LABEL",
    "NOTE",
    "AUTHOR",
    "AT",
    "ROW_ID",
    "UNCHANGED",
    "JOURNAL_VERSION",
    "FlagJournal",
    "SavedEdit",
    "ExampleState",
    "Batch",
    "apply_flags",
]

# ---- names -------------------------------------------------------------------------------------
FLAG: Final = "flag"
NEW_LABEL: Final = "new_label"
NOTE: Final = "note"
AUTHOR: Final = "author"
AT: Final = "at"
ROW_ID: Final = "row_id"

FLAG_MISLABELED: Final = "mislabeled"
FLAG_OOD: Final = "ood"
FLAG_AMBIGUOUS: Final = "ambiguous"
FLAG_KEEP: Final = "keep"
FLAG_VALUES: Final = (FLAG_MISLABELED, FLAG_OOD, FLAG_AMBIGUOUS, FLAG_KEEP)
"""The flags a person can set. ``None`` or ``""`` clears the flag."""

JOURNAL_VERSION: Final = 1
"""``PRAGMA user_version`` of a journal written by this version."""

_CLEARED_LABEL: Final = -1
_TABLE: Final = "edits"
_COLUMNS: Final = ("id", S.EXAMPLE_ID, FLAG, NEW_LABEL, NOTE, AUTHOR, AT)
_BUSY_TIMEOUT_S: Final = 60.0

_DDL: Final = (
    f"""CREATE TABLE IF NOT EXISTS {_TABLE} (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    example_id NOT NULL CHECK (typeof(example_id) IN ('integer', 'text')),
    flag       TEXT CHECK (flag IS NULL OR flag IN ('', {", ".join(repr(f) for f in FLAG_VALUES)})),
    new_label  INTEGER CHECK (new_label IS NULL OR new_label >= -1),
    note       TEXT,
    author     TEXT NOT NULL DEFAULT '',
    at         TEXT NOT NULL
)""",
    f"CREATE INDEX IF NOT EXISTS edits_by_example ON {_TABLE} (example_id, id)",
    f"""CREATE TRIGGER IF NOT EXISTS edits_no_update BEFORE UPDATE ON {_TABLE}
BEGIN SELECT RAISE(ABORT, 'flags journal is append-only'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS edits_no_delete BEFORE DELETE ON {_TABLE}
BEGIN SELECT RAISE(ABORT, 'flags journal is append-only'); END""",
)


# Ids of each run's table.parquet, keyed by its path and checked against (mtime, size), shared by
# every FlagJournal of the process (a dashboard may create one per page run).
_IDS_CACHE: dict[str, tuple[tuple[str, int, int], frozenset[int | str], str]] = {}
_IDS_LOCK = threading.Lock()


class _Unchanged:
    """Sentinel type: the field is left as it is."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __bool__(self) -> bool:
        return False


UNCHANGED: Final = _Unchanged()
"""Default of :meth:`FlagJournal.add` fields: leave the field as it is. ``None`` clears it."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _is_timestamp(text: str) -> bool:
    try:
        _dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _normalize_id(example_id: Any) -> int | str:
    """Return ``example_id`` as a plain ``int`` or ``str`` (the two types the journal stores)."""
    if isinstance(example_id, (bool, np.bool_)):
        raise TypeError(f"Expected `example_id` to be an int or a str, got bool {example_id!r}.")
    if isinstance(example_id, (int, np.integer)):
        value = int(example_id)
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"Expected `example_id` to fit in 64 bits, got {value}.")
        return value
    if isinstance(example_id, (str, np.str_)):
        return str(example_id)
    raise TypeError(
        f"Expected `example_id` to be an int or a str, got {type(example_id).__name__} "
        f"{example_id!r}."
    )


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _ids_frame_column(ids: Sequence[int | str]) -> pd.Series:
    """Ids as a Series whose values compare equal to a table's ids (int64 when all are ints)."""
    if len(ids) and all(isinstance(i, int) for i in ids):
        return pd.Series(np.asarray(ids, dtype=np.int64), name=S.EXAMPLE_ID)
    if len(ids) and all(isinstance(i, str) for i in ids):
        return pd.Series(list(ids), dtype="str", name=S.EXAMPLE_ID)
    return pd.Series(list(ids), dtype=object, name=S.EXAMPLE_ID)


@dataclass(frozen=True)
class SavedEdit:
    """What :meth:`FlagJournal.add_checked` wrote and what it found in between.

    Attributes
    ----------
    row_id : int
        The journal row id of the edit just written.
    intervening : DataFrame
        The example's journal rows written after the row the editor had seen and before this
        edit (oldest first; the columns of :meth:`FlagJournal.history`). Empty when the editor's
        view was current.
    """

    row_id: int
    intervening: pd.DataFrame = field(repr=False)

    @property
    def concurrent(self) -> bool:
        """Whether another edit of the example came in after the editor's view of it."""
        return not self.intervening.empty


@dataclass(frozen=True)
class ExampleState:
    """The current state of one example in the journal (:meth:`FlagJournal.current`).

    Attributes
    ----------
    flag : str or None
    new_label : int or None
    note : str or None
    last_edit_id : int
        Row id of the example's latest edit (0: never edited): pass it to
        :meth:`FlagJournal.add_checked` as ``seen``.
    """

    flag: str | None
    new_label: int | None
    note: str | None
    last_edit_id: int


@dataclass(frozen=True)
class Batch:
    """One transaction of :meth:`FlagJournal.add_batch`: the rows it wrote and the state before.

    Attributes
    ----------
    row_ids : list of int
        Journal row ids written, one per edit, in the order given.
    before : dict
        ``example_id -> ExampleState``: each edited example's state just before the batch (read
        in the same transaction), for :meth:`FlagJournal.undo_batch`.
    """

    row_ids: list[int]
    before: dict[int | str, ExampleState] = field(repr=False)

    def __len__(self) -> int:
        return len(self.row_ids)


class FlagJournal:
    """Append-only journal of flags, relabels and notes of one run (``RUN_DIR/flags.sqlite``).

    The object holds no open connection: every call opens, uses and closes its own, so one
    instance may be shared between threads, and several processes may use the same file.
    Reading a run without a journal returns empty frames and creates nothing; the first write
    creates the file.

    Parameters
    ----------
    run_dir : path-like
        The run directory (must exist).
    check_ids : bool, default True
        Refuse edits of ids that ``table.parquet`` does not hold (when the table exists).

    Raises
    ------
    FileNotFoundError
        ``run_dir`` does not exist.
    SchemaError
        ``flags.sqlite`` exists but is not a readable SQLite database or not a flags journal.

    Examples
    --------
    >>> import tempfile
    >>> from analysis.synthetic import make_synthetic_run
    >>> run = make_synthetic_run(tempfile.mkdtemp(), n_examples=20, n_epochs=2)
    >>> journal = FlagJournal(run)
    >>> row = journal.add(3, flag="mislabeled", new_label=1, note="looks like class 1")
    >>> journal.latest()[["example_id", "flag", "new_label"]].to_dict("records")
    [{'example_id': 3, 'flag': 'mislabeled', 'new_label': 1}]
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, check_ids: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.check_ids = check_ids
        if not self.run_dir.is_dir():
            raise FileNotFoundError(f"Run directory {str(self.run_dir)!r} does not exist.")
        self.path = self.run_dir / S.FLAGS_FILE
        if self.path.exists():
            with self._connect(write=False) as con:
                self._check_schema(con)

    def __repr__(self) -> str:
        return f"FlagJournal({str(self.run_dir)!r})"

    # ---- connections --------------------------------------------------------------------------

    def _corrupt(self, exc: BaseException) -> SchemaError:
        return SchemaError(
            f"{str(self.path)!r} is not a readable flags journal ({exc}). Move the file aside "
            "(it may be restored from a backup, or recovered with `sqlite3 flags.sqlite .recover`); "
            "a new, empty journal is created on the next edit."
        )

    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._corrupt(exc) from exc
        try:
            if write:
                self._ensure_wal(con)
            con.execute("PRAGMA synchronous=FULL")
            yield con
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.IntegrityError):
                raise ValueError(f"The flags journal refused the edit ({exc}).") from exc
            if isinstance(exc, sqlite3.OperationalError):
                text = str(exc)
                if "locked" in text or "busy" in text:
                    raise TimeoutError(
                        f"{str(self.path)!r} stayed locked by another writer for "
                        f"{_BUSY_TIMEOUT_S:.0f} s."
                    ) from exc
                if "readonly" in text or "read-only" in text:
                    raise PermissionError(
                        f"{str(self.path)!r} is read-only ({text}); edits need a writable run "
                        "directory."
                    ) from exc
                if "malformed" not in text and "not a database" not in text and "decode" not in text:
                    raise OSError(f"Could not use {str(self.path)!r} ({text}).") from exc
            raise self._corrupt(exc) from exc
        finally:
            con.close()

    def _ensure_wal(self, con: sqlite3.Connection) -> None:
        """Put the journal in WAL mode (persistent: a no-op once the file is in it).

        Switching modes takes SQLite's write lock but does not wait for it (no busy handler):
        while another connection writes to a journal that is not yet in WAL mode (two first
        edits at once), it fails at once with "database is locked". Retried here, with backoff,
        up to the same timeout as any other wait for the lock.
        """
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        delay = 0.005
        while True:
            try:
                mode = con.execute("PRAGMA journal_mode").fetchone()
                if mode is None or str(mode[0]).lower() != "wal":
                    mode = con.execute("PRAGMA journal_mode=WAL").fetchone()
                break
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        if mode is None or str(mode[0]).lower() != "wal":  # pragma: no cover - odd FS
            raise SchemaError(
                f"{str(self.path)!r}: SQLite refused WAL mode (got {mode!r}); the journal "
                "needs a local file system."
            )

    def _check_schema(self, con: sqlite3.Connection) -> bool:
        """Return whether the journal table exists; raise if the file is not a journal."""
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if _TABLE not in names:
            if names - {"sqlite_sequence"}:
                raise SchemaError(
                    f"{str(self.path)!r} is an SQLite database but not a flags journal (tables: "
                    f"{sorted(names)}). Move it aside."
                )
            return False
        cols = [r[1] for r in con.execute(f"PRAGMA table_info({_TABLE})")]
        if cols[: len(_COLUMNS)] != list(_COLUMNS):
            raise SchemaError(
                f"{str(self.path)!r}: expected the `{_TABLE}` table to have the columns "
                f"{list(_COLUMNS)}, got {cols}."
            )
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > JOURNAL_VERSION:
            raise SchemaError(
                f"{str(self.path)!r} has journal version {version}, but this datamap reads up to "
                f"{JOURNAL_VERSION}. Upgrade datamap."
            )
        return True

    def _ensure_schema(self, con: sqlite3.Connection) -> None:
        if not self._check_schema(con):
            for statement in _DDL:
                con.execute(statement)
            con.execute(f"PRAGMA user_version={JOURNAL_VERSION}")

    # ---- validation ---------------------------------------------------------------------------

    def _n_classes(self) -> int | None:
        if not (self.run_dir / S.RUN_JSON).is_file():
            return None
        from analysis.runstore import load_run_meta

        return load_run_meta(self.run_dir).n_classes

    def _table_ids(self) -> tuple[frozenset[int | str], str] | None:
        path = self.run_dir / S.TABLE_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        with _IDS_LOCK:
            hit = _IDS_CACHE.get(key[0])
            if hit is not None and hit[0] == key:
                return hit[1], hit[2]
        col = pq.read_table(path, columns=[S.EXAMPLE_ID]).column(0).to_numpy(zero_copy_only=False)
        kind = "int" if np.issubdtype(col.dtype, np.integer) else "str"
        ids = frozenset(col.tolist())
        with _IDS_LOCK:
            _IDS_CACHE[key[0]] = (key, ids, kind)
        return ids, kind

    def _validate(
        self, example_ids: list[int | str], flag: Any, new_label: Any, note: Any, author: Any,
        *, n_classes: int | None | _Unchanged = UNCHANGED,
    ) -> tuple[str | None, int | None, str | None, str]:
        if flag is UNCHANGED:
            flag_db = None
        elif flag is None or flag == "":
            flag_db = ""
        elif isinstance(flag, str) and flag in FLAG_VALUES:
            flag_db = flag
        else:
            raise ValueError(
                f"Expected `flag` in {FLAG_VALUES} (or None/'' to clear it), got {flag!r}."
            )
        if new_label is UNCHANGED:
            label_db = None
        elif new_label is None:
            label_db = _CLEARED_LABEL
        else:
            if isinstance(new_label, (bool, np.bool_)) or not isinstance(new_label, (int, np.integer)):
                raise TypeError(
                    f"Expected `new_label` to be an int class index (or None to clear), got "
                    f"{type(new_label).__name__} {new_label!r}."
                )
            label_db = int(new_label)
            if isinstance(n_classes, _Unchanged):
                n_classes = self._n_classes()
            hi = n_classes if n_classes is not None else None
            if label_db < 0 or (hi is not None and label_db >= hi):
                raise ValueError(
                    f"Expected `new_label` in [0, {hi if hi is not None else 'n_classes'}) "
                    f"(run.json lists {hi} classes), got {label_db}."
                )
        if note is UNCHANGED:
            note_db = None
        elif note is None:
            note_db = ""
        elif isinstance(note, str):
            note_db = note
        else:
            raise TypeError(f"Expected `note` to be a str, got {type(note).__name__}.")
        if not isinstance(author, str):
            raise TypeError(f"Expected `author` to be a str, got {type(author).__name__}.")
        if flag_db is None and label_db is None and note_db is None:
            raise ValueError(
                "Expected at least one of `flag`, `new_label`, `note` to be given; the edit "
                "changes nothing."
            )
        if self.check_ids:
            known = self._table_ids()
            if known is not None:
                ids, kind = known
                missing = [i for i in example_ids if i not in ids]
                if missing:
                    raise ValueError(
                        f"Expected example ids of {S.TABLE_FILE} (ids there are {kind}s), got "
                        f"{len(missing)} unknown: {missing[:5]!r}."
                    )
        return flag_db, label_db, note_db, author

    # ---- writes -------------------------------------------------------------------------------

    def add(
        self,
        example_id: int | str,
        *,
        flag: str | None | _Unchanged = UNCHANGED,
        new_label: int | None | _Unchanged = UNCHANGED,
        note: str | None | _Unchanged = UNCHANGED,
        author: str = "",
    ) -> int:
        """Append one edit and return its journal row id once it is committed.

        Parameters
        ----------
        example_id : int or str
            Id of the example (as in the table; NumPy integers are accepted).
        flag : str or None, optional
            One of :data:`FLAG_VALUES`; ``None`` or ``""`` clears the flag; omitted: unchanged.
        new_label : int or None, optional
            Corrected class index in ``[0, n_classes)``; ``None`` clears a relabel; omitted:
            unchanged.
        note : str or None, optional
            Free text; ``""`` or ``None`` clears the note; omitted: unchanged.
        author : str, default ""
            Who made the edit.

        Returns
        -------
        int
            The journal row id.

        Raises
        ------
        ValueError
            Unknown flag, label out of range, id not in the table, or an edit that changes nothing.
        TypeError
            An id that is neither int nor str, or a non-integer label.
        """
        return self._insert(example_id, flag, new_label, note, author, seen=None)[0]

    def add_checked(
        self,
        example_id: int | str,
        *,
        seen: int,
        flag: str | None | _Unchanged = UNCHANGED,
        new_label: int | None | _Unchanged = UNCHANGED,
        note: str | None | _Unchanged = UNCHANGED,
        author: str = "",
    ) -> SavedEdit:
        """Append one edit made on a view of the example as of journal row ``seen``.

        The edit is always written (a person's edit is never lost); in the same transaction the
        example's rows written after ``seen`` are read, so the caller can tell the person that
        another edit came in between (both stay in the history; the later one wins per field).

        Parameters
        ----------
        example_id : int or str
        seen : int
            :meth:`last_edit_id` of the example when the editor's view was read (0: no edit yet).
        flag, new_label, note, author
            As in :meth:`add`.

        Returns
        -------
        SavedEdit

        Raises
        ------
        ValueError, TypeError
            As :meth:`add`; also a negative or non-integer ``seen``.
        """
        if isinstance(seen, (bool, np.bool_)) or not isinstance(seen, (int, np.integer)) or seen < 0:
            raise ValueError(f"Expected `seen` to be a journal row id >= 0, got {seen!r}.")
        row_id, between = self._insert(example_id, flag, new_label, note, author, seen=int(seen))
        return SavedEdit(row_id=row_id, intervening=self._frame(between))

    def _insert(
        self, example_id: Any, flag: Any, new_label: Any, note: Any, author: Any, *, seen: int | None,
    ) -> tuple[int, list[tuple[Any, ...]]]:
        eid = _normalize_id(example_id)
        values = self._validate([eid], flag, new_label, note, author)
        between: list[tuple[Any, ...]] = []
        with self._connect(write=True) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                self._ensure_schema(con)
                if seen is not None:
                    between = con.execute(
                        f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE} "
                        "WHERE example_id = ? AND id > ? ORDER BY id",
                        (eid, seen),
                    ).fetchall()
                cur = con.execute(
                    f"INSERT INTO {_TABLE} (example_id, flag, new_label, note, author, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (eid, *values, _now()),
                )
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        return int(cur.lastrowid or 0), between

    def add_many(
        self,
        example_ids: Iterable[int | str],
        *,
        flag: str | None | _Unchanged = UNCHANGED,
        new_label: int | None | _Unchanged = UNCHANGED,
        note: str | None | _Unchanged = UNCHANGED,
        author: str = "",
    ) -> int:
        """Append the same edit for many examples in one transaction (all or nothing).

        Parameters are those of :meth:`add`; ``example_ids`` is any iterable of ids (a NumPy
        array or a Series works). Duplicated ids are written once.

        Returns
        -------
        int
            Number of rows appended (0 for no ids).
        """
        ids = list(dict.fromkeys(_normalize_id(i) for i in example_ids))
        if not ids:
            return 0
        values = self._validate(ids, flag, new_label, note, author)
        at = _now()
        with self._connect(write=True) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                self._ensure_schema(con)
                con.executemany(
                    f"INSERT INTO {_TABLE} (example_id, flag, new_label, note, author, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    ((i, *values, at) for i in ids),
                )
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        return len(ids)

    def add_batch(self, edits: Iterable[dict[str, Any]], *, author: str = "") -> Batch:
        """Append several edits, each with its own values, in one transaction (all or nothing).

        Parameters
        ----------
        edits : iterable of dict
            ``{"example_id": ..., "flag": ..., "new_label": ..., "note": ...}``; a missing key
            leaves that field unchanged, ``None`` clears it (as in :meth:`add`). An example may
            appear once.
        author : str, default ""

        Returns
        -------
        Batch
            The row ids and every edited example's state before the batch.

        Raises
        ------
        ValueError
            A bad value in any edit (nothing is written), or an example listed twice.
        """
        prepared: list[tuple[int | str, str | None, int | None, str | None]] = []
        seen: set[int | str] = set()
        n_classes = self._n_classes()
        for edit in edits:
            unknown = set(edit) - {S.EXAMPLE_ID, FLAG, NEW_LABEL, NOTE}
            if unknown:
                raise ValueError(f"Expected edit keys among example_id, flag, new_label, note; got {sorted(unknown)}.")
            eid = _normalize_id(edit[S.EXAMPLE_ID])
            if eid in seen:
                raise ValueError(f"Expected each example once in a batch, got {eid!r} twice.")
            seen.add(eid)
            flag_db, label_db, note_db, _ = self._validate(
                [eid], edit.get(FLAG, UNCHANGED), edit.get(NEW_LABEL, UNCHANGED),
                edit.get(NOTE, UNCHANGED), author, n_classes=n_classes,
            )
            prepared.append((eid, flag_db, label_db, note_db))
        if not isinstance(author, str):
            raise TypeError(f"Expected `author` to be a str, got {type(author).__name__}.")
        if not prepared:
            return Batch(row_ids=[], before={})
        at = _now()
        with self._connect(write=True) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                self._ensure_schema(con)
                before = self._states(con, [p[0] for p in prepared])
                row_ids = []
                for eid, flag_db, label_db, note_db in prepared:
                    cur = con.execute(
                        f"INSERT INTO {_TABLE} (example_id, flag, new_label, note, author, at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (eid, flag_db, label_db, note_db, author, at),
                    )
                    row_ids.append(int(cur.lastrowid or 0))
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        return Batch(row_ids=row_ids, before=before)

    def undo_batch(self, batch: Batch, *, author: str = "") -> tuple[int, list[int | str]]:
        """Undo a batch by appending, in one transaction, rows that restore each example's state
        from before it (flag, relabel and note). The journal stays append-only: the batch and its
        undo both stay in the history.

        Examples edited again after the batch (by anyone) are left as they are and returned, so
        a later edit is never overwritten silently.

        Returns
        -------
        (int, list)
            Examples restored, and the ids skipped because they were edited after the batch.
        """
        if not batch.row_ids:
            return 0, []
        last = max(batch.row_ids)
        ids = list(batch.before)
        with self._connect(write=True) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                self._ensure_schema(con)
                later: set[int | str] = set()
                for chunk in _chunks(ids, 500):
                    marks = ", ".join("?" * len(chunk))
                    later.update(r[0] for r in con.execute(
                        f"SELECT DISTINCT example_id FROM {_TABLE} WHERE id > ? AND example_id IN ({marks})",
                        (last, *chunk),
                    ))
                at = _now()
                restored = 0
                for eid in ids:
                    if eid in later:
                        continue
                    state = batch.before[eid]
                    con.execute(
                        f"INSERT INTO {_TABLE} (example_id, flag, new_label, note, author, at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (eid, state.flag or "",
                         _CLEARED_LABEL if state.new_label is None else int(state.new_label),
                         state.note or "", author, at),
                    )
                    restored += 1
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        return restored, [i for i in ids if i in later]

    def _states(self, con: sqlite3.Connection, ids: list[int | str]) -> dict[int | str, ExampleState]:
        """Current state of each of ``ids`` (inside the caller's transaction)."""
        out = {eid: ExampleState(None, None, None, 0) for eid in ids}
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            marks = ", ".join("?" * len(chunk))
            rows = con.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE} WHERE example_id IN ({marks}) ORDER BY id",
                tuple(chunk),
            ).fetchall()
            for row_id, eid, row_flag, row_label, row_note, _author, _at in rows:
                cur = out[eid]
                out[eid] = ExampleState(
                    flag=cur.flag if row_flag is None else (row_flag or None),
                    new_label=cur.new_label if row_label is None else (
                        None if row_label == _CLEARED_LABEL else int(row_label)),
                    note=cur.note if row_note is None else (row_note or None),
                    last_edit_id=int(row_id),
                )
        return out

    # ---- reads --------------------------------------------------------------------------------

    def _rows(self, where: str = "", params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        with self._connect(write=False) as con:
            if not self._check_schema(con):
                return []
            rows = con.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE} {where} ORDER BY id", params
            ).fetchall()
        self._check_rows(rows)
        return rows

    def _check_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Reject a row this module never writes (a hand edit), naming it; the schema's CHECKs
        let some through (SQLite compares text above every number, REAL passes ``>= -1``)."""
        n_classes: int | None = None
        for row_id, example_id, flag, new_label, note, author, at in rows:
            problem = None
            if isinstance(example_id, bool) or not isinstance(example_id, (int, str)):
                problem = f"`example_id` {example_id!r}"
            elif flag is not None and not (isinstance(flag, str) and flag in ("", *FLAG_VALUES)):
                problem = f"`flag` {flag!r} (expected one of {list(FLAG_VALUES)}, '' or NULL)"
            elif new_label is not None and (isinstance(new_label, bool) or not isinstance(new_label, int)
                                            or new_label < _CLEARED_LABEL):
                problem = f"`new_label` {new_label!r} (expected a class index, -1 or NULL)"
            elif note is not None and not isinstance(note, str):
                problem = f"`note` {note!r} (expected text or NULL)"
            elif not isinstance(author, str):
                problem = f"`author` {author!r} (expected text)"
            elif not isinstance(at, str) or not _is_timestamp(at):
                problem = f"`at` {at!r} (expected an ISO 8601 UTC time)"
            elif isinstance(new_label, int) and new_label >= 0:
                if n_classes is None:
                    try:
                        n_classes = self._n_classes() or -1
                    except (SchemaError, OSError, ValueError):
                        n_classes = -1
                if n_classes > 0 and new_label >= n_classes:
                    problem = f"`new_label` {new_label} (run.json lists {n_classes} classes)"
            if problem is not None:
                raise SchemaError(
                    f"{str(self.path)!r}: journal row id {row_id} has {problem}, which datamap never "
                    "writes (edited by hand?). Correct or remove that row with the sqlite3 tool (the "
                    "journal's triggers forbid changes: drop them first), or move the file aside."
                )

    def count(self) -> int:
        """Number of rows in the journal (0 when there is no journal yet)."""
        if not self.path.exists():
            return 0
        with self._connect(write=False) as con:
            if not self._check_schema(con):
                return 0
            return int(con.execute(f"SELECT COUNT(*) FROM {_TABLE}").fetchone()[0])

    def current(self, example_id: int | str) -> ExampleState:
        """The current state of one example and the id of its latest edit, read at once.

        Examples
        --------
        >>> import tempfile
        >>> from analysis.synthetic import make_synthetic_run
        >>> journal = FlagJournal(make_synthetic_run(tempfile.mkdtemp(), n_examples=10, n_epochs=2))
        >>> journal.current(4)
        ExampleState(flag=None, new_label=None, note=None, last_edit_id=0)
        >>> _ = journal.add(4, flag="ood", note="a photo")
        >>> _ = journal.add(4, flag=None)
        >>> journal.current(4)
        ExampleState(flag=None, new_label=None, note='a photo', last_edit_id=2)
        """
        rows = self._rows("WHERE example_id = ?", (_normalize_id(example_id),))
        flag: str | None = None
        new_label: int | None = None
        note: str | None = None
        last = 0
        for row_id, _eid, row_flag, row_label, row_note, _author, _at in rows:
            last = max(last, int(row_id))
            if row_flag is not None:
                flag = row_flag or None
            if row_label is not None:
                new_label = None if row_label == _CLEARED_LABEL else int(row_label)
            if row_note is not None:
                note = row_note or None
        return ExampleState(flag=flag, new_label=new_label, note=note, last_edit_id=last)

    def last_edit_id(self, example_id: int | str) -> int:
        """The journal row id of the example's latest edit; 0 when it has none.

        An editor records it with the state it shows, and passes it to :meth:`add_checked`.
        """
        eid = _normalize_id(example_id)
        if not self.path.exists():
            return 0
        with self._connect(write=False) as con:
            if not self._check_schema(con):
                return 0
            row = con.execute(f"SELECT MAX(id) FROM {_TABLE} WHERE example_id = ?", (eid,)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def history(self, example_id: int | str | None = None) -> pd.DataFrame:
        """The journal rows as stored, oldest first (optionally of one example).

        Returns
        -------
        DataFrame
            Columns ``row_id, example_id, flag, new_label, note, author, at`` with the raw
            encoding of the module docstring (``''`` = cleared flag/note, ``-1`` = cleared
            relabel, missing = unchanged); ``at`` is a UTC timestamp.
        """
        if example_id is None:
            rows = self._rows()
        else:
            rows = self._rows("WHERE example_id = ?", (_normalize_id(example_id),))
        return self._frame(rows)

    @staticmethod
    def _frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
        cols = list(zip(*rows, strict=True)) if rows else [()] * len(_COLUMNS)
        return pd.DataFrame({
            ROW_ID: np.asarray(cols[0], dtype=np.int64),
            S.EXAMPLE_ID: _ids_frame_column(list(cols[1])),
            FLAG: pd.Series(list(cols[2]), dtype="str"),
            NEW_LABEL: pd.Series(list(cols[3]), dtype="Int64"),
            NOTE: pd.Series(list(cols[4]), dtype="str"),
            AUTHOR: pd.Series(list(cols[5]), dtype="str"),
            AT: pd.to_datetime(pd.Series(list(cols[6]), dtype="str"), utc=True, format="ISO8601"),
        })

    def latest(self) -> pd.DataFrame:
        """Current state of every example with at least one edit, in order of its last edit.

        Each field is the latest non-null value over the example's rows; a cleared flag, relabel
        or note is missing. ``author`` and ``at`` are those of the example's latest edit.

        Returns
        -------
        DataFrame
            Columns ``example_id, flag, new_label, note, author, at``; ``example_id`` is int64
            when every id is an int (so it compares equal to an int table id), str when every id
            is a str.
        """
        hist = self.history()
        cols = [S.EXAMPLE_ID, FLAG, NEW_LABEL, NOTE, AUTHOR, AT]
        if hist.empty:
            return hist[cols]
        # groupby().last() takes the last non-null value of each column within each example.
        last = hist.groupby(S.EXAMPLE_ID, sort=False).last()
        last = last.sort_values(ROW_ID, kind="stable").reset_index()
        last[FLAG] = last[FLAG].mask(last[FLAG] == "")
        last[NOTE] = last[NOTE].mask(last[NOTE] == "")
        last[NEW_LABEL] = last[NEW_LABEL].mask(last[NEW_LABEL] == _CLEARED_LABEL)
        last[S.EXAMPLE_ID] = _ids_frame_column(last[S.EXAMPLE_ID].tolist())
        return last[cols]


def apply_flags(table: pd.DataFrame, latest: pd.DataFrame | None) -> pd.DataFrame:
    """Return ``table`` with the columns ``flag``, ``new_label`` and ``note`` of ``latest`` joined.

    Parameters
    ----------
    table : DataFrame
        The example table (needs ``example_id``). Existing ``flag``/``new_label``/``note``
        columns are replaced.
    latest : DataFrame or None
        :meth:`FlagJournal.latest`; ``None`` or empty gives all-missing columns.

    Returns
    -------
    DataFrame
        A new frame, same rows and order as ``table``; missing where an example has no value.
    """
    if S.EXAMPLE_ID not in table.columns:
        raise ValueError(f"Expected `table` to have an `{S.EXAMPLE_ID}` column, got {list(table.columns)}.")
    out = table.drop(columns=[c for c in (FLAG, NEW_LABEL, NOTE) if c in table.columns])
    n = len(out)
    if latest is None or latest.empty:
        out[FLAG] = pd.Series([None] * n, dtype="str", index=out.index)
        out[NEW_LABEL] = pd.Series(pd.array([pd.NA] * n, dtype="Int64"), index=out.index)
        out[NOTE] = pd.Series([None] * n, dtype="str", index=out.index)
        return out
    missing = [c for c in (S.EXAMPLE_ID, FLAG, NEW_LABEL, NOTE) if c not in latest.columns]
    if missing:
        raise ValueError(f"Expected `latest` to come from FlagJournal.latest(); it misses {missing}.")
    pos = pd.Index(latest[S.EXAMPLE_ID]).get_indexer(table[S.EXAMPLE_ID])
    out[FLAG] = pd.Series(latest[FLAG].astype("str").array.take(pos, allow_fill=True), index=out.index)
    out[NEW_LABEL] = pd.Series(
        latest[NEW_LABEL].astype("Int64").array.take(pos, allow_fill=True), index=out.index
    )
    out[NOTE] = pd.Series(latest[NOTE].astype("str").array.take(pos, allow_fill=True), index=out.index)
    return out
