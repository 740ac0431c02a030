"""Export one network of each family in timm (PyTorch Image Models) to ONNX files that codesign's
tests read: networks nobody wrote for codesign, beyond torchvision's zoo.

    <python with timm>/bin/python benchmarks/export_timm.py [--out DIR] [--size 64] [--models NAME ...]

timm registers ~1,400 models in ~100 modules (families). One model per module is exported: the
first name that reads as a small variant (``pico``, ``nano``, ``tiny``, ``small``, ``18``, ``b0``...),
built with ``pretrained=False`` (nothing is downloaded) and 1000 classes, in eval mode, with the
TorchScript exporter at opset 17, as ``benchmarks/export_torchvision.py`` does (weights stored as
``ConstantOfShape`` fills, a few kB per network). Transformers are built for the input size
(``img_size``). A model that does not export at ``--size`` is tried at its own default input size;
one that exports at neither is listed in the manifest with the exporter's error.

Output: ``DIR/<model>_<size>.onnx`` and ``DIR/manifest.json`` (the torchvision export's manifest
format, with ``timm`` for the library version). Default DIR: ``$CODESIGN_TIMM_ONNX``, else
``<user cache dir>/codesign/timm-onnx``. Exported models are skipped, so a killed run resumes.
Each model is exported in a child process with a time limit (``--timeout-s``): a few of timm's
models take minutes to trace at their default size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_torchvision import MANIFEST_VERSION, OPSET, export_one  # noqa: E402

# Name fragments of a family's small variants, most preferred first.
_SMALL = ("pico", "nano", "tiny", "small", "xs", "s_", "18", "b0", "_s", "lite", "mini", "050", "075", "100")


def default_dir() -> Path:
    env = os.environ.get("CODESIGN_TIMM_ONNX")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("codesign")) / "timm-onnx"


def one_per_family() -> list[str]:
    """The smallest-sounding model of each timm module, sorted."""
    import timm

    picks = []
    for module in timm.list_modules():
        names = timm.list_models(module=module)
        if not names:
            continue

        def rank(name: str) -> tuple[int, int]:
            return next((i for i, frag in enumerate(_SMALL) if frag in name), len(_SMALL)), len(name)

        picks.append(min(names, key=rank))
    return sorted(picks)


def _build(name: str, size: int):
    import timm

    try:  # transformers fix their position embeddings to the input size at construction
        return timm.create_model(name, pretrained=False, num_classes=1000, img_size=size)
    except TypeError:
        return timm.create_model(name, pretrained=False, num_classes=1000)


def _default_size(name: str) -> int:
    import timm

    cfg = timm.get_pretrained_cfg(name)
    return int(cfg.input_size[1]) if cfg is not None and getattr(cfg, "input_size", None) else 224


def _child(name: str, size: int, path: str, max_inline: int) -> None:
    """Export in this (child) process and print the manifest entry as JSON."""
    try:
        entry = export_one(name, size, Path(path), max_inline, build=_build)
    except Exception as exc:  # a model that does not build or export at this size
        entry = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
    print(json.dumps(entry))


def _export(name: str, size: int, path: Path, max_inline: int, timeout_s: float) -> dict:
    cmd = [sys.executable, __file__, "--child", name, str(size), str(path), str(max_inline)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"export took over {timeout_s:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exporter exited {out.returncode}: {tail}"[:300]}
    return json.loads(lines[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="output folder (default $CODESIGN_TIMM_ONNX or the user cache)")
    ap.add_argument("--size", type=int, default=64, help="input size tried first (default 64)")
    ap.add_argument("--models", nargs="*", default=None, help="model names (default: one per timm family)")
    ap.add_argument("--max-inline", type=int, default=4096,
                    help="initializers above this many elements become ConstantOfShape (default 4096)")
    ap.add_argument("--timeout-s", type=float, default=600, help="time limit of one export (default 600)")
    args = ap.parse_args()
    try:
        import timm
        import torch
    except ImportError as exc:
        sys.exit(f"export_timm.py: {exc.name} is not installed (pip install timm, beside a matching torch)")

    out = Path(args.out) if args.out else default_dir()
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest and (manifest.get("format_version") != MANIFEST_VERSION or "timm" not in manifest):
        sys.exit(f"{manifest_path} is not a manifest of this script")
    manifest.update(format_version=MANIFEST_VERSION, torch=torch.__version__, timm=timm.__version__, opset=OPSET,
                    max_inline=args.max_inline)
    models = manifest.setdefault("models", {})
    names = args.models or one_per_family()
    for i, name in enumerate(names):
        if any(e.get("model") == name and ("file" in e and (out / e["file"]).exists() or "error" in e)
               for e in models.values()):
            continue
        sizes = [args.size] + [s for s in [_default_size(name)] if s != args.size]
        for size in sizes:
            key = f"{name}_{size}"
            entry = {"model": name, "size": size, **_export(name, size, out / f"{key}.onnx", args.max_inline,
                                                            args.timeout_s)}
            models[key] = entry
            print(f"[{i + 1}/{len(names)}] {key}: {entry.get('error') or str(entry['bytes']) + ' bytes'}",
                  file=sys.stderr, flush=True)
            tmp = manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
            tmp.replace(manifest_path)
            if "file" in entry:
                break
    ok = sum(1 for e in models.values() if "file" in e)
    print(json.dumps({"out": str(out), "models": len(names), "exported": ok,
                      "failed": sorted({e["model"] for e in models.values()} - {e["model"] for e in models.values() if "file" in e})}))


if __name__ == "__main__":
    main()
