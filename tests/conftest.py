"""Settings shared by every test file.

Hypothesis: a local run draws new examples each time (and replays any failure it found before
from .hypothesis/), so the property tests keep exploring. Under CI (the CI environment variable
set, as .ci/run does) the ``ci`` profile runs instead: ``derandomize`` seeds every test from its
own source, so each run checks the same examples, and no example database is read or written, so
a CI result depends on the code alone. HYPOTHESIS_PROFILE=<name> picks a profile explicitly.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)


def _profile() -> str:
    if os.environ.get("HYPOTHESIS_PROFILE"):
        return os.environ["HYPOTHESIS_PROFILE"]
    ci = os.environ.get("CI", "").strip().lower()
    return "ci" if ci not in ("", "0", "false", "no") else "default"


settings.load_profile(_profile())
