"""Atomic file and directory writes.

Every target of the workflow is written under a temporary name in the **same directory** as the final path and
renamed into place with :func:`os.replace` only when it is complete. A crash or a killed job therefore never
leaves a truncated file under a final name: Snakemake (and odc-stats' "does the STAC item exist" skip logic) can
trust that a file which exists is whole. The same directory matters because a rename is only atomic within one
file system.

Temporary names start with a dot and keep the final suffix (``.name.tmp-<random>.tif``) so that tools which pick
a format from the extension (GDAL) still do the right thing, and so that they are easy to spot and clean up.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_directory",
    "atomic_path",
    "temporary_sibling",
    "write_json_atomic",
    "write_text_atomic",
]


def temporary_sibling(final: Path, kind: str = "tmp") -> Path:
    """A fresh, unused-looking name next to ``final``: ``.{stem}.{kind}-{random}{suffix}``."""
    final = Path(final)
    suffix = "".join(final.suffixes)
    stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
    return final.with_name(f".{stem}.{kind}-{secrets.token_hex(4)}{suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(final: Path | str, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success rename it to ``final``, on failure remove it.

    The parent directories of ``final`` are created. The body must create the file at the yielded path (it
    is not created in advance, so writers that refuse to overwrite work too). An existing ``final`` is
    replaced only once the new file is complete. ``fsync=True`` flushes the file to disk before the rename.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
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


def write_text_atomic(path: Path | str, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (parents created); returns the final path."""
    path = Path(path)
    with atomic_path(path) as tmp:
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
