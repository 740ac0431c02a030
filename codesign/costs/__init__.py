"""Cost sources: where the search gets the latency/energy (and, for hardware, area) of every option
of every decision and of whole networks. The search sees only the :class:`CostSource` interface;
which device, model or simulator stands behind it is chosen here.

    source = open_cost_source(device="cpu-local", schedule="untuned")   # a profiled TVM device
    source = open_cost_source(cost_model="phone.json")                  # a saved/calibrated model
    source.prepare(space.kernels(), cache="run/cost_model.json")        # profile + fit, or load
    source.kernel_costs(specs)      # {"latency_ms": array, "energy_mj": array}
    source.network_cost(specs)      # {"latency_ms": float, ...}, the whole network with overheads
    source.measure("model.onnx")    # the reality check, or None where nothing can measure

Shipped kinds (registry ``COST_SOURCES``): ``tvm`` (profile a device with TVM, fit a cost model),
``model`` (a saved or calibrated cost model), ``accel`` (one modelled accelerator config of
``codesign.hw_models``) and ``hw-space`` (a space of accelerator configs, searched with the network). Adding one: subclass :class:`CostSource` in a
module of this package and register it (see docs/architecture.md).
"""

from .accelerator import AcceleratorSource, HardwareAxis, HardwareSpaceSource
from .base import COST_SOURCES, CostSource, register_cost_source
from .model import ModelCostSource, TVMDeviceSource, open_cost_source

__all__ = ["COST_SOURCES", "AcceleratorSource", "CostSource", "HardwareAxis", "HardwareSpaceSource",
           "ModelCostSource", "TVMDeviceSource", "open_cost_source", "register_cost_source"]
