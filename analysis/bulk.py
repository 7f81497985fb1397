"""Bulk review actions on a set of examples: one journal transaction each, undone by appending.

An action (:class:`BulkAction`) is planned against the table (:func:`plan_bulk`: which examples it
changes and how; a confirmation shows its counts), applied in one transaction
(:func:`apply_bulk`, :meth:`analysis.flags.FlagJournal.add_batch`) and undone by appending rows
that restore each example's state from before it (:func:`undo_bulk`); the journal is never
rewritten.

Actions:

* ``flag`` — set one flag (``mislabeled``, ``ood``, ``ambiguous``, ``keep``);
* ``relabel_suggested`` — relabel each example to the label the model suggests
  (:func:`analysis.evidence.suggested_labels`); examples whose suggestion is their given label, or
  that have none, are left out;
* ``relabel`` — relabel every example to one class; examples of that class are left out;
* ``clear`` — clear the flag and the relabel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from analysis import schema as S
from analysis.evidence import suggested_labels
from analysis.flags import FLAG, FLAG_VALUES, NEW_LABEL, Batch, FlagJournal

__all__ = ["ActionKind", "BulkAction", "BulkPlan", "apply_bulk", "plan_bulk", "undo_bulk"]

ActionKind = Literal["flag", "relabel_suggested", "relabel", "clear"]
_KINDS: tuple[str, ...] = get_args(ActionKind)


@dataclass(frozen=True)
class BulkAction:
    """What to do to every example of a selection.

    Attributes
    ----------
    kind : {"flag", "relabel_suggested", "relabel", "clear"}
    flag : str, optional
        The flag of ``kind="flag"``.
    label : int, optional
        The class of ``kind="relabel"``.
    """

    kind: ActionKind
    flag: str | None = None
    label: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Expected `kind` in {_KINDS}, got {self.kind!r}.")
        if self.kind == "flag" and self.flag not in FLAG_VALUES:
            raise ValueError(f"Expected `flag` in {FLAG_VALUES} for a flag action, got {self.flag!r}.")
        if self.kind == "relabel" and (
            isinstance(self.label, (bool, np.bool_)) or not isinstance(self.label, (int, np.integer))
            or self.label < 0
        ):
            raise ValueError(f"Expected a class index `label` >= 0 for a relabel action, got {self.label!r}.")

    def describe(self, class_name: Any = str) -> str:
        """A short phrase: ``flag as mislabeled``, ``relabel to the suggested label``, ..."""
        if self.kind == "flag":
            return f"flag as {self.flag}"
        if self.kind == "relabel_suggested":
            return "relabel to the suggested label"
        if self.kind == "relabel":
            return f"relabel to {class_name(self.label)}"
        return "clear flag and relabel"


@dataclass(frozen=True)
class BulkPlan:
    """The edits an action makes on a selection, before anything is written.

    Attributes
    ----------
    action : BulkAction
    edits : list of dict
        One :meth:`FlagJournal.add_batch` edit per example it changes.
    n_selected : int
        Examples in the selection.
    n_skipped : int
        Examples the action leaves out (no suggestion, or already of the target class).
    """

    action: BulkAction
    edits: list[dict[str, Any]] = field(repr=False)
    n_selected: int
    n_skipped: int

    def __len__(self) -> int:
        return len(self.edits)


def plan_bulk(table: pd.DataFrame, example_ids: Sequence[Any] | np.ndarray, action: BulkAction) -> BulkPlan:
    """Plan ``action`` on the examples ``example_ids`` of ``table``.

    Parameters
    ----------
    table : DataFrame
        The example table (``example_id``, ``label``; ``suggested_label`` or ``final_pred`` for
        ``relabel_suggested``).
    example_ids : sequence
        The selection; ids the table lacks are ignored, duplicates count once.
    action : BulkAction

    Returns
    -------
    BulkPlan
    """
    if not isinstance(action, BulkAction):
        raise TypeError(f"Expected a BulkAction, got {type(action).__name__}.")
    ids_col = table[S.EXAMPLE_ID]
    rows = np.flatnonzero(ids_col.isin(pd.Index(pd.unique(np.asarray(example_ids, dtype=object)))).to_numpy())
    ids = ids_col.to_numpy()[rows]
    given = (table[S.LABEL].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
             if S.LABEL in table.columns else np.full(len(rows), np.nan))
    keep = np.ones(len(rows), dtype=bool)
    targets: np.ndarray | None = None
    if action.kind == "relabel_suggested":
        suggested = suggested_labels(table).to_numpy(dtype=np.float64, na_value=np.nan)[rows]
        keep = np.isfinite(suggested) & (suggested != given)
        targets = suggested
    elif action.kind == "relabel":
        target = float(action.label if action.label is not None else -1)
        keep = np.asarray(given != target, dtype=bool)
        targets = np.full(len(rows), target)
    edits: list[dict[str, Any]] = []
    for i in np.flatnonzero(keep):
        eid = ids[i].item() if hasattr(ids[i], "item") else ids[i]
        if action.kind == "flag":
            edits.append({S.EXAMPLE_ID: eid, FLAG: action.flag})
        elif action.kind == "clear":
            edits.append({S.EXAMPLE_ID: eid, FLAG: None, NEW_LABEL: None})
        else:
            assert targets is not None
            edits.append({S.EXAMPLE_ID: eid, NEW_LABEL: int(targets[i])})
    return BulkPlan(action=action, edits=edits, n_selected=len(rows), n_skipped=int((~keep).sum()))


def apply_bulk(journal: FlagJournal, plan: BulkPlan, *, author: str = "") -> Batch:
    """Write a plan's edits in one transaction; keep the returned batch to undo it."""
    return journal.add_batch(plan.edits, author=author)


def undo_bulk(journal: FlagJournal, batch: Batch, *, author: str = "") -> tuple[int, list[Any]]:
    """Undo a batch by appending restoring rows (:meth:`FlagJournal.undo_batch`)."""
    return journal.undo_batch(batch, author=author)
