"""Where codesign keeps the files it writes without being told where.

Everything codesign writes on its own (the default profile database, MetaSchedule tuning records
kept beside it, numba's compiled accelerator model) goes under one per-user cache directory:
``$CODESIGN_CACHE_DIR`` when set, else the platform's user cache directory for codesign
(``~/.cache/codesign`` on Linux, honouring ``$XDG_CACHE_HOME``). Nothing is ever written into the
installed package: site-packages is often read-only or shared, and a file left there outlives
``pip uninstall`` and can shadow a later editable install. Outputs the user asks for (run
directories, ``--out`` files) go where the command line says.

This module imports nothing from codesign, so every part of the package may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "CODESIGN_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """The user cache directory of codesign, or a path inside it (not created here).

    Args:
        parts: path components below the cache directory, e.g. ``cache_dir("numba")``.

    Returns:
        ``$CODESIGN_CACHE_DIR/<parts>`` when the variable is set and not empty, else
        ``platformdirs.user_cache_dir("codesign")/<parts>``.
    """
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        base = Path(env).expanduser()
    else:
        from platformdirs import user_cache_dir

        base = Path(user_cache_dir("codesign"))
    return base.joinpath(*parts)
