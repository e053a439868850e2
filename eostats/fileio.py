"""Atomic file and directory writes.

Every target of the workflow is written under a temporary name in the **same directory** as the final path and
renamed into place with :func:`os.replace` only when it is complete. A crash or a killed job therefore never
leaves a truncated file under a final name: Snakemake (and odc-stats' "does the STAC item exist" skip logic) can
trust that a file which exists is whole. The same directory matters because a rename is only atomic within one
file system.

Temporary names start with a dot and keep the final suffix (``.name.tmp-<random>.tif``) so that tools which pick
a format from the extension (GDAL) still do the right thing, and so that they are easy to spot and clean up.

A process killed with SIGKILL (or a lost node) cannot remove its temporaries. Each writer therefore removes the
temporaries that an earlier, killed writer of the **same final path** left (:func:`remove_stale_temporaries`) before
it starts: a resumed run ends with no leftovers. This relies on one writer per final path at a time, which
Snakemake guarantees (a job owns its outputs, and the directory lock keeps a second Snakemake out).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "TEMPORARY_KINDS",
    "atomic_directory",
    "atomic_path",
    "remove_stale_temporaries",
    "stale_temporaries",
    "temporary_sibling",
    "temporary_sibling_dir",
    "write_json_atomic",
    "write_text_atomic",
]


#: the kinds of temporary sibling the package makes: ``tmp`` (being written), ``old`` (being replaced), ``build``
TEMPORARY_KINDS = ("tmp", "old", "build")


def _stem_and_suffix(final: Path) -> tuple[str, str]:
    suffix = "".join(final.suffixes)
    stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
    return stem, suffix


def temporary_sibling(final: Path, kind: str = "tmp") -> Path:
    """A fresh, unused-looking name next to ``final``: ``.{stem}.{kind}-{random}{suffix}``."""
    final = Path(final)
    stem, suffix = _stem_and_suffix(final)
    return final.with_name(f".{stem}.{kind}-{secrets.token_hex(4)}{suffix}")


def temporary_sibling_dir(final: Path | str, kind: str = "tmp") -> Path:
    """A new empty directory next to ``final``, named like :func:`temporary_sibling` (so that
    :func:`remove_stale_temporaries` finds it if its writer is killed)."""
    final = Path(final)
    stem, suffix = _stem_and_suffix(final)
    return Path(tempfile.mkdtemp(prefix=f".{stem}.{kind}-", suffix=suffix, dir=final.parent))


def stale_temporaries(final: Path | str) -> list[Path]:
    """Temporary siblings of ``final`` that a writer left behind: the names :func:`temporary_sibling` and
    ``tempfile.mkdtemp(prefix=".{name}.tmp-")`` make (8 random characters), with their side files (an SQLite
    ``-journal``, a GDAL ``.aux.xml``). Nothing else matches: another final path's temporaries are not included."""
    final = Path(final)
    stem, suffix = _stem_and_suffix(final)
    kinds = "|".join(TEMPORARY_KINDS)
    pattern = re.compile(
        rf"\.{re.escape(stem)}\.(?:{kinds})-[0-9a-z_]{{8}}{re.escape(suffix)}(?:[.-][A-Za-z0-9.]+)?"
    )
    try:
        names = os.listdir(final.parent)
    except FileNotFoundError:
        return []
    return sorted(final.parent / name for name in names if pattern.fullmatch(name))


def remove_stale_temporaries(final: Path | str) -> list[Path]:
    """Remove what :func:`stale_temporaries` finds (files or directories); returns the removed paths."""
    stale = stale_temporaries(final)
    for path in stale:
        _remove(path)
    return stale


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(
    final: Path | str, *, fsync: bool = False, clean_stale: bool = True
) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success rename it to ``final``, on failure remove it.

    The parent directories of ``final`` are created, and temporaries of ``final`` left by a killed writer removed
    (``clean_stale=False`` skips that listing of the parent: for many files written into one directory). The
    body must create the file at the yielded path (it
    is not created in advance, so writers that refuse to overwrite work too). An existing ``final`` is
    replaced only once the new file is complete. ``fsync=True`` flushes the file to disk before the rename.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:
        remove_stale_temporaries(final)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {final}")
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def write_text_atomic(
    path: Path | str, text: str, *, encoding: str = "utf-8", clean_stale: bool = True
) -> Path:
    """Write ``text`` to ``path`` atomically (parents created); returns the final path."""
    path = Path(path)
    with atomic_path(path, clean_stale=clean_stale) as tmp:
        tmp.write_text(text, encoding=encoding)
    return path


def write_json_atomic(
    path: Path | str, obj: Any, *, indent: int | None = 2, sort_keys: bool = False
) -> Path:
    """Write ``obj`` as JSON (UTF-8, trailing newline) atomically; NaN/Infinity are refused.

    Strict JSON is enforced (``allow_nan=False``) because STAC readers in other languages reject NaN.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False, ensure_ascii=False)
    return write_text_atomic(path, text + "\n")


@contextlib.contextmanager
def atomic_directory(final_dir: Path | str) -> Iterator[Path]:
    """Yield a fresh sibling directory to fill; on success it becomes ``final_dir``.

    On failure the partial directory is removed and an existing ``final_dir`` is left untouched. An existing
    ``final_dir`` is replaced safely: it is first renamed aside, the new directory renamed into place, and only
    then the old one deleted, so readers see either the old or the new complete directory under the final name
    (there is a moment when the name is absent, since POSIX has no atomic exchange of non-empty directories).
    If the second rename fails, the old directory is put back.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final_dir)
    tmp = temporary_sibling(final_dir)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    old: Path | None = None
    try:
        if final_dir.exists() or final_dir.is_symlink():
            old = temporary_sibling(final_dir, kind="old")
            os.replace(final_dir, old)
        os.replace(tmp, final_dir)
    except BaseException:
        if old is not None and not final_dir.exists():
            os.replace(old, final_dir)
            old = None
        _remove(tmp)
        raise
    if old is not None:
        _remove(old)
