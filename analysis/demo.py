"""The demo's own run: a per-user copy of the shipped sample run, outside the source tree.

``datamap demo`` writes flags (``flags.sqlite``) and exports (``exports/``) into the run it shows.
Shown straight from ``sample_data/run`` those would land in the repository (untracked files that
the next demo starts with) or fail in a read-only install. The demo therefore works on a copy in
the user's data directory::

    $XDG_DATA_HOME/datamap/demo        (default ~/.local/share/datamap/demo)

made on first use (copied from the shipped run, or built when the install ships none) and kept
between demos, so a review carries over. ``datamap demo --reset`` replaces it with a fresh copy.
The copy holds a marker file (:data:`MARKER`); a reset refuses to delete a directory without it.
The marker records a fingerprint of the shipped analysis; when a newer datamap ships a re-analysed
sample, the copy's analysis files (table, ``ood_eval.json``, ``cache/``) are refreshed from it and
the person's flags and exports are kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from analysis import schema as S

__all__ = ["MARKER", "SAMPLE_RUN", "default_demo_dir", "prepare_demo_run"]

logger = logging.getLogger(__name__)

SAMPLE_RUN = Path(__file__).resolve().parents[1] / "sample_data" / "run"
"""The sample run shipped in the source tree (``sample_data/run``)."""
MARKER = ".datamap-demo"
"""File inside a demo copy: marks the directory as one datamap made (and may replace)."""
_LEFT_BEHIND = (S.FLAGS_FILE, f"{S.FLAGS_FILE}-wal", f"{S.FLAGS_FILE}-shm", S.EXPORTS_DIR)
"""What a copy never takes from the source: a person's edits and exports."""
_ANALYSIS_FILES = (S.TABLE_FILE, S.OOD_EVAL_FILE)
"""The analysis outputs a newer shipped sample replaces in an existing copy (with ``cache/``)."""
_FINGERPRINT_KEY = "source-analysis: "


def default_demo_dir() -> Path:
    """``$XDG_DATA_HOME/datamap/demo``, with ``XDG_DATA_HOME`` defaulting to ``~/.local/share``.

    A relative ``XDG_DATA_HOME`` is ignored, as the XDG Base Directory specification asks.
    """
    base = os.environ.get("XDG_DATA_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / "datamap" / "demo"


def prepare_demo_run(
    dest: str | os.PathLike[str] | None = None,
    *,
    reset: bool = False,
    source: str | os.PathLike[str] | None = None,
) -> Path:
    """Make sure the demo's own run exists at ``dest`` (copied or built) and is analysed.

    Parameters
    ----------
    dest : path-like, optional
        Where the demo run lives; default :func:`default_demo_dir`.
    reset : bool, default False
        Replace an existing demo copy (its flags and exports are deleted) with a fresh one.
    source : path-like, optional
        The run to copy; default the shipped :data:`SAMPLE_RUN`. When it has no ``run.json``
        (an install without the sample), the sample run is built in the copy instead (about a
        minute).

    Returns
    -------
    Path
        ``dest``, holding an analysed run (``table.parquet``).

    Raises
    ------
    ValueError
        ``dest`` is the source itself, or ``dest`` exists and is not a demo copy (no
        :data:`MARKER`, not empty) — nothing is deleted or overwritten then.
    """
    target = Path(dest) if dest is not None else default_demo_dir()
    src = Path(source) if source is not None else SAMPLE_RUN
    if target.exists() and src.exists() and target.resolve() == src.resolve():
        raise ValueError(
            f"Expected the demo directory to be outside the shipped run, got {str(target)!r}. "
            "Choose another directory."
        )
    is_copy = (target / MARKER).is_file()
    if target.exists() and not is_copy and any(target.iterdir()):
        raise ValueError(
            f"Expected {str(target)!r} to be a datamap demo copy (with a {MARKER} file) or "
            "absent, got a directory with other files. Move it aside, or set XDG_DATA_HOME."
        )
    if reset and is_copy:
        logger.info("removing the demo copy %s", target)
        shutil.rmtree(target)
    if not (target / S.RUN_JSON).is_file():
        _make_copy(src, target)
    elif is_copy:
        _refresh_analysis(src, target)
    if not (target / S.TABLE_FILE).is_file():
        from analysis.pipeline import analyze_run

        analyze_run(target)
    return target


def _make_copy(src: Path, target: Path) -> None:
    """Copy (or build) the run into a temporary sibling, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # an empty directory, or a demo copy left half-made
        shutil.rmtree(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        staged = tmp / "run"
        if (src / S.RUN_JSON).is_file():
            logger.info("copying the sample run %s to %s", src, target)
            shutil.copytree(src, staged, ignore=shutil.ignore_patterns(*_LEFT_BEHIND))
        else:
            from analysis import sample

            logger.warning("building the sample run in %s (about a minute)", target)
            sample.build_sample_run(staged)
        _write_marker(staged, _fingerprint(src))
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fingerprint(src: Path) -> str:
    """SHA-256 over the source's analysis files ("" when it has none, e.g. a built sample)."""
    digest = hashlib.sha256()
    found = False
    for name in _ANALYSIS_FILES:
        path = src / name
        if path.is_file():
            found = True
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest() if found else ""


def _write_marker(run: Path, fingerprint: str) -> None:
    text = "A copy of datamap's sample run for `datamap demo`; `datamap demo --reset` replaces it.\n"
    if fingerprint:
        text += f"{_FINGERPRINT_KEY}{fingerprint}\n"
    tmp = run / f"{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, run / MARKER)


def _recorded_fingerprint(run: Path) -> str:
    for line in (run / MARKER).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(_FINGERPRINT_KEY):
            return line[len(_FINGERPRINT_KEY):].strip()
    return ""


def _refresh_analysis(src: Path, target: Path) -> None:
    """Bring a copy made from an older shipped analysis up to the current one; keep the edits."""
    current = _fingerprint(src)
    if not current or _recorded_fingerprint(target) == current:
        return
    logger.info("the shipped sample run was re-analysed: refreshing the analysis in %s "
                "(flags and exports kept)", target)
    for name in _ANALYSIS_FILES:
        if (src / name).is_file():
            tmp = target / f".{name}.{os.getpid()}.tmp"
            shutil.copyfile(src / name, tmp)
            os.replace(tmp, target / name)
        else:  # an output the newer analysis no longer writes
            (target / name).unlink(missing_ok=True)
    cache = src / S.CACHE_DIR
    if cache.is_dir():
        staged = Path(tempfile.mkdtemp(prefix=".cache.", dir=target))
        try:
            shutil.copytree(cache, staged / "cache")
            old = target / S.CACHE_DIR
            if old.exists():
                shutil.rmtree(old)
            os.replace(staged / "cache", old)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    _write_marker(target, current)
