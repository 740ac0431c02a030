"""The files users hand to codesign, read and written with one-line errors.

Readers refuse what they cannot use before anything is computed from it: a missing path, a folder
where a file belongs, bytes that are not text, JSON, CSV or an npz archive (a truncated download,
a binary file given as a table). Writers' destinations are checked before the work whose result
they will hold (:func:`check_output`), so a long computation never ends on an unwritable path.
Each error is a :class:`~codesign.errors.CodesignError` naming the file and what it should be.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CodesignError


def input_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it is an existing, readable regular file.

    Raises:
        CodesignError: missing, a folder, or unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise CodesignError(f"no {what} at {path}")
    if path.is_dir():
        raise CodesignError(f"{what} {path} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise CodesignError(f"{what} {path} is not readable (permissions)")
    return path


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of a file; binary content is refused."""
    path = input_file(path, what)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CodesignError(f"{what} {path} is not a text file (it holds binary data)") from None
    except OSError as exc:
        raise CodesignError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The parsed content of a JSON file (truncated or non-JSON content is refused)."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CodesignError(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                            "it may be truncated") from None


def read_csv(path: str | os.PathLike, what: str = "table") -> tuple[list[str], list[tuple[int, dict]]]:
    """A CSV table with a header: (column names, [(line number, row dict), ...]).

    Raises:
        CodesignError: see :func:`read_text`; no header; a malformed line (NUL bytes, bad quoting).
    """
    text = read_text(path, what)
    if "\x00" in text:
        raise CodesignError(f"{what} {path} is not a CSV table (it holds NUL bytes)")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = list(reader.fieldnames or ())
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise CodesignError(f"{what} {path} is not a readable CSV table ({exc})") from None
    if not columns:
        raise CodesignError(f"{what} {path} is empty: a CSV table needs a header line")
    return columns, rows


def read_npz(path: str | os.PathLike, what: str = "npz archive") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, loaded without pickle.

    Raises:
        CodesignError: missing, truncated or not an npz archive, or an array that needs pickle.
    """
    path = input_file(path, what)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise CodesignError(f"{what} {path} is a single .npy array, not an npz archive")
            return {k: z[k] for k in z.files}
    except CodesignError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise CodesignError(f"{what} {path} is truncated or not an npz archive "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def writable(path: str | os.PathLike) -> bool:
    """Whether codesign may write ``path`` (a file, or a folder to create files in).

    Write permission bits count even for root, who could write anyway: a file or folder its owner
    marked read-only (``chmod a-w``) is left alone, as is one on a read-only file system."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    need = os.W_OK | (os.X_OK if path.is_dir() else 0)
    return bool(mode & 0o222) and os.access(path, need)


def _first_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")


def check_output(path: str | os.PathLike, what: str = "output", folder: bool = False) -> Path:
    """``path`` if codesign can write it there: a file (or, with ``folder``, a folder) that is
    missing or writable, under a folder that exists and is writable or can be created.

    Call it before the work whose result goes to ``path``; nothing is created.

    Raises:
        CodesignError: a folder where a file is to go (or a file where a folder is), a read-only
            destination, a parent that is a file.
    """
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise CodesignError(f"{what} {path} is a file, not a folder")
        if not folder and path.is_dir():
            raise CodesignError(f"{what} {path} is a folder, not a file")
        if not writable(path):
            raise CodesignError(f"{what} {path} is read-only")
        if folder:
            return path
    existing = _first_existing(path.parent)
    if not existing.is_dir():
        raise CodesignError(f"{what} {path}: {existing} is a file, not a folder")
    if not writable(existing):
        raise CodesignError(f"{what} {path}: the folder {existing} is read-only")
    return path
