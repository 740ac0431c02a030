"""Prediction of latency and energy from profiles: features, cost models, calibration, evaluation.

``graph`` splits ONNX/torch networks into the kernels TVM runs; ``models`` holds the cost model
registry (``create_cost_model``, ``load_cost_model``); ``calibrate`` carries a model to a new device
from a few measurements; ``measure`` compiles and times whole networks with TVM.
"""

from .calibrate import CalibratedModel, calibrate, read_table
from .models import (
    CostModel,
    create_cost_model,
    list_cost_models,
    load_cost_model,
    register_cost_model,
)

__all__ = [
    "CalibratedModel",
    "CostModel",
    "calibrate",
    "create_cost_model",
    "list_cost_models",
    "load_cost_model",
    "read_table",
    "register_cost_model",
]
