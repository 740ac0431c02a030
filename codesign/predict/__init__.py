"""Prediction of latency and energy from profiles: features, cost models, calibration, evaluation.

``graph`` splits ONNX/torch networks into the kernels TVM runs; ``models`` holds the cost model
registry (``create_cost_model``, ``load_cost_model``); ``api`` predicts whole networks (ONNX files,
ModelProtos, torch nn.Modules); ``calibrate`` carries a model to a new device from a few
measurements (``fewshot``: from a meta-learned prior and a device's latencies on reference
networks); ``measure`` compiles and times whole networks with TVM. See docs/predict.md.
"""

from .api import network_kernels, predict_network, predict_networks, read_model_table
from .calibrate import CalibratedModel, calibrate, read_table
from .fewshot import FewShotModel
from .models import (
    CostModel,
    check_model,
    create_cost_model,
    list_cost_models,
    load_cost_model,
    register_cost_model,
)

__all__ = [
    "CalibratedModel",
    "CostModel",
    "FewShotModel",
    "calibrate",
    "check_model",
    "create_cost_model",
    "list_cost_models",
    "load_cost_model",
    "network_kernels",
    "predict_network",
    "predict_networks",
    "read_model_table",
    "read_table",
    "register_cost_model",
]
