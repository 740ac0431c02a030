"""Export torchvision's classification zoo to ONNX files that codesign's tests and benchmarks read.

    <python with torchvision>/bin/python benchmarks/export_torchvision.py [--out DIR] [--sizes 32 64]
                                                                          [--models NAME ...]

Every classification model ``torchvision.models.list_models(module=torchvision.models)`` lists is
built with ``weights=None`` (nothing is downloaded), put in eval mode and exported with the
TorchScript exporter at opset 17 (``dynamo=False``, constant folding on, as
``codesign.graph.export_onnx`` does) for a 1x3xSxS input at each size. A model that cannot be built
or exported at a size (Inception-v3 needs at least 75x75; ViTs need the size at construction) is
listed in the manifest with its error instead of a file.

Weights are not part of an architecture's latency, but they are most of an ONNX file's size (the
zoo holds ~4.5e9 parameters: ~18 GB per input size). Every initializer of more than
``--max-inline`` elements is therefore stored as a ``ConstantOfShape`` node filled with its
(constant) value: the file keeps the network's computation and shapes and is a few kB per network; TVM's
importer and onnxruntime turn those nodes into constants at load time, and codesign's graph front
end reads their shapes without materialising them.

Output: ``DIR/<model>_<size>.onnx`` and ``DIR/manifest.json`` (``format_version``, torch and
torchvision versions, opset, and per model and size the file or the error). Default DIR:
``$CODESIGN_TORCHVISION_ONNX``, else ``<user cache dir>/codesign/torchvision-onnx``. Models already
exported are skipped, so a killed run resumes (``--retry-failed`` tries the failed ones again). Runs with any torch/torchvision pair that imports
together (the project's own torch may lack a matching torchvision; a separate virtual environment
used only for this export is enough).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

MANIFEST_VERSION = 1
OPSET = 17


def default_dir() -> Path:
    env = os.environ.get("CODESIGN_TORCHVISION_ONNX")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("codesign")) / "torchvision-onnx"


class _ConstantInit:
    """Within the block, ``torch.nn.init``'s initialisers fill with constants: random
    initialisation of ~4.5e9 parameters takes most of an export, and the values never reach the
    file (see ``_weightless``). The constants keep activations of order 1 through any depth
    (weights 1/fan-in, zeros and ones where asked for): tiny values would decay into denormal
    floats, which CPUs compute up to 100x slower, and the timings would measure that instead."""

    def __enter__(self):
        import torch.nn.init as init

        self.saved = {n: getattr(init, n) for n in dir(init) if n.endswith("_") and not n.startswith("_")}

        def filler(name):
            def fill(tensor, *args, **kwargs):
                import torch

                with torch.no_grad():
                    if name == "ones_":
                        return tensor.fill_(1.0)
                    if name == "constant_":
                        return tensor.fill_(float(args[0] if args else kwargs["val"]))
                    if name == "zeros_" or tensor.dim() < 2:
                        return tensor.fill_(0.0)
                    return tensor.fill_(1.0 / max(1, tensor[0].numel()))

            return fill

        for n in self.saved:
            setattr(init, n, filler(n))
        return self

    def __exit__(self, *exc):
        import torch.nn.init as init

        for n, f in self.saved.items():
            setattr(init, n, f)


def _build(name: str, size: int):
    import torchvision

    kwargs = {"weights": None}
    if name.startswith("vit_"):
        kwargs["image_size"] = size  # ViTs fix their position embedding's length at construction
    if name == "inception_v3" or name == "googlenet":
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = False  # scipy truncated-normal init of every conv: minutes, unused
    return torchvision.models.get_model(name, **kwargs)


def _weightless(model, max_inline: int):
    """Initializers above ``max_inline`` elements replaced by ConstantOfShape nodes (in place)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    keep, nodes = [], []
    for t in g.initializer:
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        if n <= max_inline or t.data_type != onnx.TensorProto.FLOAT:
            keep.append(t)
            continue
        arr = numpy_helper.to_array(t)
        fill = float(arr.flat[0]) if np.all(arr == arr.flat[0]) else float(arr.mean())
        shape_name = f"{t.name}__shape"
        keep.append(numpy_helper.from_array(np.array(list(t.dims), dtype=np.int64), shape_name))
        nodes.append(helper.make_node(
            "ConstantOfShape", [shape_name], [t.name], name=f"{t.name}__fill",
            value=helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [fill]),
        ))
    del g.initializer[:]
    g.initializer.extend(keep)
    old = list(g.node)
    del g.node[:]
    g.node.extend(nodes + old)
    # Graph inputs that named the replaced initializers (older exporters list them) go away.
    names = {n.output[0] for n in nodes}
    inputs = [i for i in g.input if i.name not in names]
    del g.input[:]
    g.input.extend(inputs)
    return model


def export_one(name: str, size: int, path: Path, max_inline: int, build=None) -> dict:
    """Export model ``name`` at ``size`` to ``path`` (``build(name, size)`` makes the module;
    default torchvision's); the manifest entry."""
    import onnx
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(0)
    with _ConstantInit():
        net = (build or _build)(name, size).eval()
    buf = io.BytesIO()
    # In eval mode nn.MultiheadAttention (ViT's encoder) takes a fused fast path that has no ONNX
    # form; the unfused path it falls back to computes the same attention.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, 3, size, size),), buf, dynamo=False, opset_version=OPSET,
                              do_constant_folding=True, input_names=["input"], output_names=["output"])
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    model = _weightless(onnx.load_from_string(buf.getvalue()), max_inline)
    onnx.checker.check_model(model)
    tmp = path.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    params = sum(p.numel() for p in net.parameters())
    return {"file": path.name, "params": int(params), "bytes": path.stat().st_size,
            "export_s": round(time.perf_counter() - t0, 2)}


# torchvision's own operators (detection and ROI ops), as its fake-op registrations expect them.
# A torchvision wheel built for another variant of torch (CUDA against a CPU build) cannot load
# its compiled operators, and its import then fails on registering fakes for operators that do not
# exist; classification models call none of them, so declaring them is enough to export.
_TORCHVISION_OPS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, "
    "SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
    "-> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
    "-> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, "
    "SymInt width) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
    "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
    "SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, "
    "SymInt groups, SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)


def _import_torchvision():
    """torchvision; where its compiled operators cannot load, they are declared and it is imported
    again."""
    import importlib.util

    import torch

    if importlib.util.find_spec("torchvision") is None:
        sys.exit("export_torchvision.py: torchvision is not installed (pip install torchvision, matching torch)")
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        for schema in _TORCHVISION_OPS:
            lib.define(schema)
        globals()["_torchvision_ops_library"] = lib  # the declarations live as long as the library
        print("torchvision's compiled operators did not load; declared them (classification models use none)",
              file=sys.stderr)
        import torchvision
    return torchvision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="output folder (default $CODESIGN_TORCHVISION_ONNX or the user cache)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="input sizes (default 32 64)")
    ap.add_argument("--models", nargs="*", default=None, help="model names (default: every classification model)")
    ap.add_argument("--fallback-size", type=int, default=224,
                    help="size tried for a model that exports at none of --sizes (AlexNet and VGG pool to a "
                         "fixed 6x6/7x7 grid the exporter only handles from a multiple of it; default 224; 0: none)")
    ap.add_argument("--retry-failed", action="store_true",
                    help="export again the models and sizes the manifest lists with an error")
    ap.add_argument("--max-inline", type=int, default=4096,
                    help="initializers above this many elements become ConstantOfShape (default 4096)")
    args = ap.parse_args()
    import torch

    torchvision = _import_torchvision()

    out = Path(args.out) if args.out else default_dir()
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest and manifest.get("format_version") != MANIFEST_VERSION:
        sys.exit(f"{manifest_path} is not a manifest of this script (format_version {manifest.get('format_version')})")
    manifest.update(format_version=MANIFEST_VERSION, torch=torch.__version__, torchvision=torchvision.__version__,
                    opset=OPSET, max_inline=args.max_inline)
    models = manifest.setdefault("models", {})
    names = args.models or sorted(torchvision.models.list_models(module=torchvision.models))
    for name in names:
        sizes = list(args.sizes)
        if args.fallback_size and not args.retry_failed and all("error" in models.get(f"{name}_{s}", {"error": 1}) for s in args.sizes) \
                and all(f"{name}_{s}" in models for s in args.sizes):
            sizes.append(args.fallback_size)
        for size in sizes:
            key = f"{name}_{size}"
            path = out / f"{key}.onnx"
            if key in models and (("file" in models[key] and path.exists())
                                  or ("error" in models[key] and not args.retry_failed)):
                continue
            entry = {"model": name, "size": size}
            try:
                entry.update(export_one(name, size, path, args.max_inline))
            except Exception as exc:  # a model that does not build or export at this size
                entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            models[key] = entry
            print(f"{key}: {entry.get('error') or str(entry['bytes']) + ' bytes'}", file=sys.stderr, flush=True)
            manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
            if size == sizes[-1] and args.fallback_size and size != args.fallback_size and all(
                    "error" in models[f"{name}_{s}"] for s in sizes):
                sizes.append(args.fallback_size)  # the loop picks it up
    ok = sum(1 for e in models.values() if "file" in e)
    print(json.dumps({"out": str(out), "exported": ok, "failed": len(models) - ok}))


if __name__ == "__main__":
    main()
