"""ONNX export of derived networks, checked the way a deployment would use them.

``export_checked(module, input_shape, path)`` writes the ONNX file (opset 17, eval mode), runs
``onnx.checker`` on it and compares onnxruntime's output with PyTorch's on a random input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import CodesignError


def export_checked(module: torch.nn.Module, input_shape: tuple[int, ...], path: str | Path,
                   atol: float = 1e-4, seed: int = 0) -> dict:
    """Write ``module`` as ONNX to ``path`` and check it; returns the check's figures.

    Raises:
        CodesignError: export failure, a checker error, or onnxruntime disagreeing with torch.
    """
    import onnx
    import onnxruntime as ort

    from .graph import export_onnx

    path = Path(path)
    if path.suffix != ".onnx":
        raise CodesignError(f"ONNX output path must end in .onnx, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    proto = export_onnx(module, tuple(input_shape))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise CodesignError(f"exported ONNX fails onnx.checker: {exc}") from None
    onnx.save(proto, str(path))
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32))
    was = module.training
    module.eval()
    with torch.no_grad():
        ref = module(x).numpy()
    module.train(was)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if not np.isfinite(err) or err > atol * max(1.0, float(np.max(np.abs(ref)))):
        raise CodesignError(f"onnxruntime output differs from torch by {err:.3g} (> {atol}) for {path}")
    return {"onnx": str(path), "opset": 17, "checker": "ok", "onnxruntime_max_abs_err": err,
            "bytes": path.stat().st_size}
