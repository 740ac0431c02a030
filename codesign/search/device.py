"""Where the search trains: ``--train-device auto|cpu|cuda``.

On CUDA the supernet's edges run the Triton ``mixed_op`` kernel (``codesign.ops`` dispatches by the
tensors' device); the architecture logits, the cost table and the budgets' multipliers stay on the
CPU, where the expected costs are a few dozen multiply-adds, and the option weights move to the
GPU with the batch.
"""

from __future__ import annotations

from ..errors import CodesignError

TRAIN_DEVICES = ("auto", "cpu", "cuda")


def resolve_train_device(spec: str) -> str:
    """``"cpu"`` or ``"cuda"``: ``auto`` takes CUDA when torch sees a GPU.

    Raises:
        CodesignError: an unknown name, or ``cuda`` where torch sees no CUDA device.
    """
    if spec not in TRAIN_DEVICES:
        raise CodesignError(f"--train-device takes {', '.join(TRAIN_DEVICES)}, got {spec!r}")
    if spec == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if spec == "cuda" and not available:
        why = "this torch is a CPU build" if torch.version.cuda is None else "torch sees no CUDA device"
        raise CodesignError(f"--train-device cuda: {why}; use --train-device cpu or auto")
    return "cuda" if available else "cpu"
