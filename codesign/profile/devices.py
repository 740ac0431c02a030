"""Devices: a name, a TVM target (dict form), an optional RPC tracker, an energy source.

Declared in YAML: the ones codesign ships (``codesign/devices/*.yaml``, ``cpu-local`` among
them), the user's (``$CODESIGN_DEVICES_DIR`` or the user config dir ``codesign/devices/*.yaml``),
or a file passed explicitly. Format (version 1)::

    format_version: 1
    name: rpi4
    target: {kind: llvm, mtriple: aarch64-linux-gnu, mcpu: cortex-a72, num-cores: 4}
    rpc: {host: 127.0.0.1, port: 9190, key: rpi4}     # optional: time through TVM's tracker
    threads: 4                                        # TVM_NUM_THREADS while timing (local)
    energy: model:rpi4          # auto | none | rapl | nvml | model:<roofline name>
    roofline: rpi4              # optional: roofline of codesign.hw_models for energy/sanity
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import CodesignError
from ..files import read_text

FORMAT_VERSION = 1
_BUILTIN_DIR = Path(__file__).resolve().parent.parent / "devices"


@dataclass(frozen=True)
class Device:
    name: str
    target: dict[str, Any]
    rpc: dict[str, Any] | None = None
    threads: int = 1
    energy: str = "auto"
    roofline: str | None = None
    description: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def resolved_target(self) -> dict[str, Any]:
        """The target dict with ``mcpu: auto`` replaced by LLVM's name for this CPU."""
        target = dict(self.target)
        if target.get("mcpu") == "auto":
            if self.rpc is not None:
                raise CodesignError(
                    f"device {self.name}: mcpu 'auto' names the local CPU; give the remote CPU's "
                    "LLVM name (e.g. cortex-a72) for an RPC device"
                )
            from tvm.target import codegen

            target["mcpu"] = codegen.llvm_get_system_cpu()
        return target

    def tvm_target(self):
        """The TVM target; a target kind TVM lacks, or a CPU name LLVM does not know for the target's
        triple (LLVM would fall back to generic code under the bogus name), is a CodesignError."""
        import tvm

        target = self.resolved_target()
        try:
            built = tvm.target.Target(target)
        except Exception as exc:  # TVM raises several error types for a bad target
            raise CodesignError(f"device {self.name}: TVM cannot build for target {self.target}: "
                                f"{str(exc).splitlines()[0]}") from None
        mcpu = target.get("mcpu")
        if target.get("kind") == "llvm" and mcpu:
            from tvm.target import codegen

            triple = str(target.get("mtriple") or codegen.llvm_get_system_triple())
            if not codegen.llvm_is_valid_cpu(str(mcpu), triple):
                raise CodesignError(f"device {self.name}: LLVM knows no CPU {mcpu!r} for {triple} (LLVM's names, "
                                    "e.g. skylake, znver3, cortex-a72; `llc -mtriple=<triple> -mcpu=help` lists them)")
        return built


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def check_device_name(name: str, flag: str = "device name") -> str:
    """``name`` if it can name a device and its files (``<name>.json``): letters, digits and
    ``_ . + -``, no path separators, not starting with a dot."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CodesignError(f"{flag} {name!r} is not a device name: use letters, digits and _ . + - "
                            "(no paths; it also names the model file)")
    return name


def _device_dirs() -> list[Path]:
    dirs = [_BUILTIN_DIR]
    env = os.environ.get("CODESIGN_DEVICES_DIR")
    if env:
        dirs.append(Path(env))
    else:
        from platformdirs import user_config_dir

        dirs.append(Path(user_config_dir("codesign")) / "devices")
    return dirs


def load_device_file(path: str | Path) -> Device:
    """Read one device YAML file; raises CodesignError naming the problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(read_text(path, "device file"))
    except yaml.YAMLError as exc:
        raise CodesignError(f"device file {path} is not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise CodesignError(f"device file {path} must hold a mapping")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CodesignError(
            f"device file {path} has format_version {version!r}; this codesign reads version {FORMAT_VERSION}"
        )
    for key in ("name", "target"):
        if key not in data:
            raise CodesignError(f"device file {path} lacks '{key}'")
    if not isinstance(data["name"], str) or not data["name"].strip() or data["name"].startswith("accel:"):
        raise CodesignError(f"device file {path}: name must be a non-empty string (not accel:...), got {data['name']!r}")
    target = data["target"]
    if not isinstance(target, dict) or "kind" not in target:
        raise CodesignError(f"device file {path}: target must be a dict with a 'kind' (e.g. {{kind: llvm}})")
    known = {"format_version", "name", "target", "rpc", "threads", "energy", "roofline", "description"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CodesignError(f"device file {path}: unknown key(s) {', '.join(map(str, unknown))}; "
                            f"known: {', '.join(sorted(known))}")
    rpc = data.get("rpc")
    if rpc is not None and (not isinstance(rpc, dict) or not {"host", "port", "key"} <= set(rpc)):
        raise CodesignError(f"device file {path}: rpc needs host, port and key")
    if rpc is not None:
        port = rpc["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise CodesignError(f"device file {path}: rpc port must be an integer in 1..65535, got {port!r}")
        if set(rpc) - {"host", "port", "key"}:
            raise CodesignError(f"device file {path}: unknown rpc key(s) "
                                f"{', '.join(map(str, sorted(set(rpc) - {'host', 'port', 'key'})))}; known: host, port, key")
    energy = str(data.get("energy", "auto"))
    if energy not in ("auto", "none", "rapl", "nvml") and not energy.startswith("model:"):
        raise CodesignError(f"device file {path}: energy must be auto, none, rapl, nvml or model:<name>, got {energy!r}")
    threads = data.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise CodesignError(f"device file {path}: threads must be a positive int, got {threads!r}")
    return Device(
        name=str(data["name"]),
        target=dict(target),
        rpc=dict(rpc) if rpc else None,
        threads=threads,
        energy=energy,
        roofline=data.get("roofline"),
        description=str(data.get("description", "")),
        source=str(path),
    )


def list_devices() -> dict[str, Device]:
    """Every declared device by name (user files override shipped ones of the same name)."""
    found: dict[str, Device] = {}
    for d in _device_dirs():
        if d.is_dir():
            for path in sorted(d.glob("*.yaml")):
                dev = load_device_file(path)
                found[dev.name] = dev
    return found


def get_device(name_or_path: str) -> Device:
    """A device by name, or from a YAML file path."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        return load_device_file(name_or_path)
    devices = list_devices()
    if name_or_path not in devices:
        raise CodesignError(
            f"unknown device {name_or_path!r}; declared: {', '.join(sorted(devices))} "
            "(add a YAML file to the devices dir, see `codesign devices`)"
        )
    return devices[name_or_path]
