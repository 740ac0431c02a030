"""Profiling target devices with TVM: kernel builders, runners, energy sources, ProfileDB.

The data flow is one way: KernelSpec -> TVM PrimFunc (builders) -> compiled for the device's
target -> timed by a Runner (local or through TVM's RPC tracker) -> a Measurement stored in a
ProfileDB (SQLite). Nothing here imports the search's torch modules.
"""

from .db import Measurement, ProfileDB, default_db_path
from .devices import Device, get_device, list_devices
from .profiler import ProfileReport, profile_kernels

__all__ = [
    "Device",
    "Measurement",
    "ProfileDB",
    "ProfileReport",
    "default_db_path",
    "get_device",
    "list_devices",
    "profile_kernels",
]
