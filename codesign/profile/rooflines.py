"""Profiles against device rooflines: no measured kernel may run faster than its device's roofline
bound (``codesign hw roofline-check``). The rooflines themselves are data of ``codesign.hw_models``."""

from __future__ import annotations

from pathlib import Path

from ..errors import CodesignError
from ..hw_models.roofline import check_measurements, get_roofline
from .db import ProfileDB
from .devices import get_device


def check_profile_db(db_path, device: str, roofline: str | None = None, schedule: str | None = None) -> dict:
    """``check_measurements`` over a profile database's kernels of one device.

    The roofline defaults to the one the device declares (``roofline:`` in its YAML)."""
    path = Path(db_path)
    if not path.is_file():
        raise CodesignError(f"no profile database at {path}")
    if roofline is None:
        dev = get_device(device)
        if not dev.roofline:
            raise CodesignError(f"device {device} declares no roofline; pass one (e.g. --roofline cpu-local)")
        roofline = dev.roofline
    r = get_roofline(roofline)
    with ProfileDB(path, readonly=True) as db:
        ms = db.query(device=device, schedule=schedule, ok_only=True)
    if not ms:
        raise CodesignError(f"{path} holds no measured kernels of device {device}"
                            + (f" under schedule {schedule}" if schedule else ""))
    out = {"device": device, "roofline": r.name, "database": str(path)}
    by_schedule: dict[str, list] = {}
    for m in ms:
        by_schedule.setdefault(m.schedule, []).append(m)
    out["schedules"] = {s: check_measurements(v, r) for s, v in sorted(by_schedule.items())}
    out["violations"] = sum(len(v["violations"]) for v in out["schedules"].values())
    return out
