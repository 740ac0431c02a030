"""Hardware cost models: an analytical accelerator template (Eyeriss/Timeloop/Accelergy style),
device rooflines, and expected costs under distributions over hardware choices for search.

Public API (see docs/hw_models.md):

- ``AcceleratorConfig``, ``get_accelerator``, ``list_accelerators``, ``load_accelerator``
- ``evaluate_network``, ``evaluate_layers``, ``evaluate_grid``, ``network_kernels``
- ``HardwareSpace``, ``HardwareCostTable``, ``expected_cost``; hardware spaces as YAML files:
  ``get_hardware_space``, ``list_hardware_spaces``, ``load_hardware_space``
- ``Roofline``, ``get_roofline``, ``list_rooflines``, ``check_measurements``
- ``mapper.evaluate_rows`` (numba batch evaluation on encoded rows)
"""

from .accelerator import (
    AREA_DEFAULTS_MM2,
    DATAFLOWS,
    ENERGY_DEFAULTS_PJ,
    AcceleratorConfig,
    get_accelerator,
    list_accelerators,
    load_accelerator,
)
from .evaluate import (
    LayerResult,
    NetworkResult,
    evaluate_grid,
    evaluate_layers,
    evaluate_network,
    network_kernels,
)
from .expected import HardwareCostTable, HardwareSpace, expected_cost
from .hwspace import get_hardware_space, list_hardware_spaces, load_hardware_space
from .roofline import Roofline, check_measurements, get_roofline, list_rooflines

__all__ = [
    "AREA_DEFAULTS_MM2", "DATAFLOWS", "ENERGY_DEFAULTS_PJ", "AcceleratorConfig", "get_accelerator",
    "list_accelerators", "load_accelerator", "LayerResult", "NetworkResult", "evaluate_grid",
    "evaluate_layers", "evaluate_network", "network_kernels", "HardwareCostTable", "HardwareSpace",
    "expected_cost", "get_hardware_space", "list_hardware_spaces", "load_hardware_space", "Roofline", "check_measurements", "get_roofline", "list_rooflines",
]
