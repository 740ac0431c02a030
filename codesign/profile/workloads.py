"""A kernel as the fused function TVM compiles for it inside a whole network.

Under the tuned policies a kernel's profile is only worth its name if the network that is
measured later runs the same code. MetaSchedule looks its records up by workload (the PrimFunc,
compared structurally), and a kernel written directly in TE (``builders.build``) is another
workload than the function Relax fuses out of an ONNX graph: 32-bit against 64-bit indices, a
bias of shape ``(C,)`` against ``(1, C, 1, 1)``, other block names. Each was then tuned on its own,
with few trials each landed on a different schedule, and the sum of the kernels' profiles missed
the network's measured latency by up to 2x either way.

``network_workload`` builds the kernel the way a network reaches TVM instead: a one-kernel ONNX
graph (the ops ``graph.onnx_kernels`` reads as that kernel), imported, legalised and fused by
the same passes as ``measure.compile_network``; the single fused function that comes out is the
workload, the very one a network with that layer asks the database for. A residual add has two
operand orders (``x + f(x)`` in codesign's MobileNet blocks, ``f(x) + x`` in ResNets and in the
cells' sums) that are two workloads: ``alias_workloads`` gives the other order, which takes the
tuned schedule of the first (``tuning.tune_and_compile``'s ``aliases``).

Kernels whose pattern no one-kernel graph reproduces (composite activations, standalone batch
norm, normalisations, products) return None and keep their TE description; so do network kernels
that one ``KernelSpec`` stands for in more than one form (a conv with a chain of several adds, or
with a batch norm after its add; a pool with adds fused in), which the network then tunes itself.
"""

from __future__ import annotations

import functools

import numpy as np

from .builders import Built

# KernelSpec activation -> ONNX op (relu6 is Clip with constant bounds, hardsigmoid torch's form)
_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "hardswish": "HardSwish", "relu6": "Clip",
                "hardsigmoid": "HardSigmoid", "tanh": "Tanh", "leaky_relu": "LeakyRelu"}


def kernel_onnx(spec, residual_first: bool = True):
    """A one-kernel ONNX model (opset 17) of ``spec`` with constant weights; None for a kernel
    outside the patterns covered (see the module docstring).

    Args:
        residual_first: a residual add reads the residual first (``x + f(x)``), else last.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes: list = []
    inits: list = []
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(spec.input_shape))]

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def weights(name, shape):
        return const(name, rng.standard_normal(shape))

    def node(op, ins, **attrs):
        out = f"t{len(nodes)}"
        nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def activation(x, name):
        if name == "none":
            return x
        if name not in _ACTIVATIONS:
            return None
        if name == "relu6":
            return node("Clip", [x, const("clip_min", 0.0), const("clip_max", 6.0)])
        if name == "hardsigmoid":
            return node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
        if name == "leaky_relu":
            return node("LeakyRelu", [x], alpha=0.01)
        return node(_ACTIVATIONS[name], [x])

    op = spec.op
    out_shape = list(spec.output_shape())
    x = "input"
    if op == "conv2d":
        c, co = spec.input_shape[1], spec.attr("out_channels")
        (kh, kw), (ph, pw) = spec.kernel_hw(), spec.padding_hw()
        g, s, d = spec.attr("groups"), spec.attr("stride"), spec.attr("dilation")
        ins = [x, weights("weight", (co, c // g, kh, kw))] + ([weights("bias", (co,))] if spec.attr("bias") else [])
        x = node("Conv", ins, kernel_shape=[kh, kw], strides=[s, s], dilations=[d, d], pads=[ph, pw, ph, pw], group=g)
        if spec.attr("residual"):
            inputs.append(helper.make_tensor_value_info("residual", TensorProto.FLOAT, out_shape))
            x = node("Add", ["residual", x] if residual_first else [x, "residual"])
        x = activation(x, spec.attr("activation"))
    elif op == "dense":
        if spec.attr("residual"):
            return None
        f, o = spec.input_shape[1], spec.attr("out_features")
        ins = [x, weights("weight", (o, f))] + ([weights("bias", (o,))] if spec.attr("bias") else [])
        x = activation(node("Gemm", ins, transB=1), spec.attr("activation"))
    elif op in ("max_pool2d", "avg_pool2d"):
        k, s, p = spec.attr("kernel"), spec.attr("stride"), spec.attr("padding")
        attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=int(bool(spec.attr("ceil_mode"))))
        if op == "avg_pool2d":
            attrs["count_include_pad"] = int(bool(spec.attr("count_include_pad")))
        x = node("MaxPool" if op == "max_pool2d" else "AveragePool", [x], **attrs)
    elif op == "global_avg_pool2d":
        x = node("GlobalAveragePool", [x])
    elif op in _ACTIVATIONS:  # a standalone activation (its input feeds other kernels too)
        x = activation(x, op)
    elif op == "add":
        inputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, list(spec.input_shape)))
        x = activation(node("Add", [x, "other"]), spec.attr("activation"))
    else:
        return None
    if x is None:
        return None
    nodes[-1].output[0] = "output"
    graph = helper.make_graph(nodes, "kernel", inputs,
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@functools.lru_cache(maxsize=4096)
def _workload(spec, target_json: str, residual_first: bool):
    import tvm

    from .measure import _fused, relax_module
    from .tuning import meta_schedule

    model = kernel_onnx(spec, residual_first)
    if model is None:
        return None
    target = tvm.target.Target(target_json)
    ms = meta_schedule(str(target.kind.name))
    mod, _ = relax_module(model)
    tasks = ms.relax_integration.extract_tasks(_fused(mod, target), target)
    if len(tasks) != 1:
        return None  # the graph fused into more than one kernel: not this kernel's workload
    func = tasks[0].dispatched[0]["main"]
    shapes = [tuple(int(v) for v in p.ty.shape) for p in func.params]
    if shapes[-1] != tuple(spec.output_shape()):
        return None
    return Built(func, shapes)


def network_workload(spec, target, residual_first: bool = True) -> Built | None:
    """The PrimFunc (and argument shapes) a network with this kernel hands MetaSchedule; None where
    the kernel's pattern is not covered (the caller keeps ``builders.build``)."""
    import json

    try:
        return _workload(spec, json.dumps(json.loads(str(target)), sort_keys=True), residual_first)
    except Exception:  # an importer or pass that fails on this pattern: the TE description serves
        return None


def alias_workloads(spec, target) -> list:
    """Other workloads that compute ``spec`` as ``network_workload`` does, as IRModules: for a
    residual conv, the other operand order of its add."""
    import tvm

    if spec.op != "conv2d" or not spec.attr("residual"):
        return []
    other = network_workload(spec, target, residual_first=False)
    return [tvm.IRModule({"main": other.func})] if other is not None else []
