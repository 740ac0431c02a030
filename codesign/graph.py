"""ONNX graph -> the kernels TVM runs (KernelSpec list), with TVM's fusion at inference.

Fusion rules (what Relax's FuseOps makes one kernel of, after constant folding):

1. ``Conv`` (square or rectangular windows, each axis padded alike at both ends) absorbs, in this
   order and each only when the previous output has no other consumer: a ``BatchNormalization``
   (folded into the weights and a bias), an ``Add`` of a constant (bias), a chain of ``Add``s of
   other tensors of the output's shape (residual; a cell node summing several edges is one kernel)
   and a ``BatchNormalization`` after them, one activation (``Relu``, ``Clip(0, 6)`` = relu6,
   ``HardSwish``, ``Sigmoid``).
2. ``Gemm`` / ``MatMul`` (+ constant ``Add``) is ``dense`` and absorbs one activation. A ``MatMul``
   of two run-time tensors, or an ``Einsum`` that is one (``bhid,bhjd->bhij``), is ``batch_matmul``.
3. A standalone ``BatchNormalization`` whose only consumer is a ``Conv`` or a ``MaxPool`` is fused into
   it (TVM inlines the per-channel scale and shift as a prologue); any other is ``batch_norm`` and
   absorbs one activation. A standalone ``Add`` of two tensors absorbs one activation.
4. ``MaxPool``, ``AveragePool`` (square kernels, symmetric padding), ``GlobalAveragePool`` (and a
   ``ReduceMean`` over H and W; over other axes, as a global pool of (1, kept, reduced, 1)) are
   pools; a window pool absorbs a following chain of ``Add``s and one activation as a conv does
   (the pool's kernel is costed, the adds ride along); ``Relu``/``Clip``/``HardSwish``/``Sigmoid``/
   ``Tanh``/``Add``/``Mul`` left alone are elementwise kernels. ``ReduceL2`` over the last axis,
   with the clip and division of ``F.normalize`` after it, is ``l2_normalize``. A ``Sub`` is
   costed as an ``Add``.
5. Layout and view ops (``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze``, ``Transpose``,
   ``Identity``, ``Dropout``, ``Shape``, ``Gather``, ``Constant``, ``Cast``, ``Concat``,
   ``Split``, ``Slice``, ``Expand``, ``Pad``, ``Tile``, the gathers and scatters) and elementwise
   math left over from the patterns (``FUSED_ELEMENTWISE``: ``Sqrt``, ``Exp``, ``Pow``,
   comparisons, ``Where``...) are not costed as kernels: they are views or copies whose cost TVM
   fuses into neighbours or that the per-network overhead absorbs.
6. What exporters write below opset 17 reads as the op it stands for: a layer norm written out
   (``ReduceMean``, ``Sub``, ``Pow``, ``ReduceMean``, ``Add``, ``Sqrt``, ``Div``, scale and shift)
   is ``layer_norm``, and ``x * HardSigmoid(x)`` (below opset 14) is HardSwish.
7. Layers beyond torchvision's (timm's zoo) read as the kernel that does the same work: a 1-D
   ``Conv`` over (N, C, L) is a conv over a 1-high image (N, C, 1, L); ``ConvTranspose`` is
   ``conv2d_transpose``; a ``Mul`` by a constant between a conv or dense and its residual add (a
   layer scale) rides in the same epilogue; ``BatchNormalization`` of a 2-D or 3-D tensor is
   ``batch_norm`` of (N, C, L, 1); ``InstanceNormalization`` (how GroupNorm exports) is
   ``instance_norm`` of (N x groups, the rest), and GroupNorm's ``Reshape -> Mul -> Add`` after
   it a ``batch_norm``; ``Resize``/``Upsample`` is ``resize2d``; ``ReduceSum``/``ReduceMax``/
   ``ReduceMin``, 1-D pools and ``GlobalMaxPool`` read every element once, as a global pool does;
   a ``Softmax``, ``LayerNormalization`` or ``ReduceL2`` over another axis is as many rows as the
   other axes hold; ``LeakyRelu`` and ``PRelu`` are ``leaky_relu``; a batched ``MatMul``
   broadcasts its batch axes as numpy does; ``auto_pad`` is worked out from the input shape.

Before any of this, ``fold_constants`` evaluates every node whose inputs are known before the
network runs (initializers, ``Constant``, ``Shape`` of a statically shaped tensor, and arithmetic
on those): exporters emit such shape arithmetic for ``chunk``/``split``/``view``, it costs nothing
at run time, and left in place it makes TVM's importer emit slices of unknown shape (see
docs/predict.md for the ``concat`` failure this causes). Weights stored as fills too large to
make stay unmade; a computation on them alone (NF-ResNets' weight standardisation) is still known
before run time, TVM folds it, and it is no kernel.

Any other op is an error naming it and listing the supported ones, unless ``allow_partial`` is
given (then it is skipped and reported).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

from .errors import CodesignError
from .kernelspec import KernelSpec

ACTIVATIONS = {"Relu": "relu", "HardSwish": "hardswish", "Sigmoid": "sigmoid", "Tanh": "tanh",
               "LeakyRelu": "leaky_relu", "PRelu": "leaky_relu"}
SKIPPED = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout", "Shape",
           "Gather", "Constant", "Cast", "Concat", "Split", "Slice", "ConstantOfShape", "Expand", "Pad", "Tile",
           "GatherElements", "GatherND", "ScatterND", "ScatterElements", "Range"}
# Elementwise math TVM fuses with the kernel it follows or precedes; the patterns that need a
# kernel of their own (GELU, F.normalize, a layer norm written out) are matched first.
FUSED_ELEMENTWISE = {"Sqrt", "Exp", "Neg", "Reciprocal", "Abs", "Log", "Pow", "Floor", "Ceil", "Erf", "Sin", "Cos",
                     "Sign", "Round", "Mod", "Max", "Min", "Where", "Equal", "Less", "Greater", "LessOrEqual",
                     "GreaterOrEqual", "Not", "And", "Or"}
KERNEL_OPS = {"Conv", "Gemm", "MatMul", "BatchNormalization", "MaxPool", "AveragePool",
              "GlobalAveragePool", "ReduceMean", "Relu", "Clip", "HardSwish", "Sigmoid", "Tanh", "Add", "Mul",
              "HardSigmoid", "Gelu", "LRN", "Softmax", "LayerNormalization", "Div", "Einsum", "ReduceL2", "Sub",
              "ReduceSum", "ReduceMax", "ReduceMin", "InstanceNormalization", "Resize", "Upsample", "LeakyRelu",
              "PRelu", "GlobalMaxPool", "ConvTranspose"}
# Reductions that read every element once, as a mean does (ReduceMean also matches a layer norm).
PLAIN_REDUCTIONS = {"ReduceSum", "ReduceMax", "ReduceMin"}


def supported_ops() -> list[str]:
    return sorted(KERNEL_OPS | SKIPPED | FUSED_ELEMENTWISE)


_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"}


def _static_shapes(graph) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _infer(model):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise CodesignError(f"ONNX shape inference failed: {exc}") from exc


def fold_constants(model, max_fill_elements: int | None = None):
    """A copy of ``model`` with every node computable before run time replaced by an initializer.

    Folds ``Constant``, ``Shape`` of statically shaped tensors and any deterministic node whose
    inputs are all folded (evaluated with ``onnx.reference``). Static input shapes are required
    for the shape arithmetic to fold.

    Args:
        max_fill_elements: ``ConstantOfShape`` nodes that would make more elements than this
            stay in the graph (their shape is inferred, their values never made). Reading the
            kernels of a network needs weights' shapes only, and architecture-only files store
            weights that way (benchmarks/export_torchvision.py); None folds them all, as
            compiling the network needs.
    """
    # One pass folds what the shapes inferred before it allow; a folded ``Pad`` or ``Reshape``
    # argument gives the next inference a static shape, whose ``Shape`` the next pass folds
    # (Swin's window padding takes ~30 passes). Passes repeat until one folds nothing.
    model = _infer(model)
    for _ in range(_MAX_FOLD_PASSES):
        before = len(model.graph.node)
        model = _fold_pass(model, max_fill_elements)
        if len(model.graph.node) == before:
            break
    return model


_MAX_FOLD_PASSES = 200


def _fold_pass(model, max_fill_elements: int | None):
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    known = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    shapes = _static_shapes(g)
    keep = []
    for n in g.node:
        ins = list(dict.fromkeys(i for i in n.input if i))
        values = None
        if (max_fill_elements is not None and n.op_type == "ConstantOfShape" and ins and ins[0] in known
                and int(np.prod(known[ins[0]])) > max_fill_elements):
            keep.append(n)
            continue
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            values = [numpy_helper.to_array(n.attribute[0].t)]
        elif n.op_type == "Shape" and n.input[0] in shapes:
            a = _attrs(n)
            dims = shapes[n.input[0]]
            values = [np.array(dims[a.get("start", 0): a.get("end", len(dims))], dtype=np.int64)]
        elif ins and all(i in known for i in ins) and n.op_type not in _NONDETERMINISTIC and n.domain in ("", "ai.onnx"):
            inputs = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(known[i].dtype), known[i].shape)
                      for i in ins]
            outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in n.output]
            single = helper.make_model(helper.make_graph([n], "fold", inputs, outputs),
                                       opset_imports=model.opset_import)
            try:
                values = ReferenceEvaluator(single).run(None, {i: known[i] for i in ins})
            except Exception:  # an op the reference runtime lacks stays in the graph
                values = None
        if values is None:
            keep.append(n)
            continue
        for out, v in zip(n.output, values):
            known[out] = np.asarray(v)
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    have = {t.name for t in g.initializer}
    new_inits = [numpy_helper.from_array(v, name) for name, v in known.items() if name in used and name not in have]
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    del folded.graph.node[:]
    folded.graph.node.extend(keep)
    folded.graph.initializer.extend(new_inits)
    del folded.graph.value_info[:]
    return _infer(folded)


def load_model(model, max_fill_elements: int | None = None):
    """An onnx.ModelProto from a path or a ModelProto, constants folded, shapes inferred
    (``max_fill_elements``: see ``fold_constants``).

    Raises:
        CodesignError: a missing or unreadable file, failed shape inference.
    """
    import onnx

    where = "the ONNX model"
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise CodesignError(f"no ONNX file at {path}")
        if path.is_dir():
            raise CodesignError(f"ONNX file {path} is a folder, not a file")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf decode errors
            raise CodesignError(f"{path} is not a readable ONNX model ({exc})") from exc
        where = str(path)
    if not isinstance(model, onnx.ModelProto):
        raise CodesignError(f"expected an ONNX file path or onnx.ModelProto, got {type(model).__name__}")
    if not model.graph.node or not model.graph.input:  # an empty file parses as an empty model
        raise CodesignError(f"{where} is not an ONNX network: its graph has no "
                            f"{'nodes' if not model.graph.node else 'inputs'} (an empty or truncated file?)")
    return fold_constants(model, max_fill_elements)


def _load(model):
    # Kernels need the weights' shapes only: large constant fills are left unmade.
    return load_model(model, max_fill_elements=1 << 16)


class _Graph:
    def __init__(self, model):
        from onnx import numpy_helper

        g = model.graph
        self.opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
        self.nodes = list(g.node)
        self.consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        self.consts[n.output[0]] = numpy_helper.to_array(a.t)
        # Tensors known before run time: constants, constant fills left unmade (see fold_constants),
        # and whatever is computed from them alone (a weight standardisation over a weight stored as
        # a fill): TVM folds those before anything runs, so they are no kernels (``weight_side``).
        self.static = set(self.consts)
        self.weight_side: set[int] = set()
        for n in self.nodes:
            ins = [i for i in n.input if i]
            if (ins and n.op_type not in _NONDETERMINISTIC and n.domain in ("", "ai.onnx")
                    and all(i in self.static for i in ins)):
                self.static.update(o for o in n.output if o)
                self.weight_side.add(id(n))
        self.shapes: dict[str, tuple[int, ...]] = _static_shapes(g)
        for name, arr in self.consts.items():
            self.shapes.setdefault(name, tuple(arr.shape))
        self.consumers: dict[str, list] = defaultdict(list)
        for n in self.nodes:
            for i in n.input:
                self.consumers[i].append(n)
        self.outputs = {o.name for o in g.output}

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self.shapes:
            raise CodesignError(f"the shape of tensor {name!r} is unknown; export with static input shapes")
        return self.shapes[name]

    def sole_consumer(self, name: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _activation_of(g: _Graph, node) -> str | None:
    if node.op_type in ACTIVATIONS:
        return ACTIVATIONS[node.op_type]
    if node.op_type == "HardSigmoid":
        a = _attrs(node)
        # torch's Hardsigmoid: relu6(x + 3) / 6
        if abs(a.get("alpha", 0.2) - 1 / 6) < 1e-6 and abs(a.get("beta", 0.5) - 0.5) < 1e-6:
            return "hardsigmoid"
        return None
    if node.op_type == "Gelu":
        return "gelu"
    if node.op_type == "Clip":
        lo, hi = _clip_bounds(g, node)
        if lo == 0.0 and hi == 6.0:
            return "relu6"
        if lo == 0.0 and hi is None:
            return "relu"
    return None


def _clip_bounds(g: _Graph, node):
    a = _attrs(node)
    lo, hi = a.get("min"), a.get("max")
    if len(node.input) > 1 and node.input[1]:
        lo = float(g.consts[node.input[1]]) if node.input[1] in g.consts else None
    if len(node.input) > 2 and node.input[2]:
        hi = float(g.consts[node.input[2]]) if node.input[2] in g.consts else None
    return (None if lo is None else float(lo)), (None if hi is None else float(hi))


def _const_value(g: _Graph, name: str) -> float | None:
    arr = g.consts.get(name)
    if arr is None or arr.size != 1:
        return None
    return float(arr.reshape(()))


def _other_input(node, name: str) -> str | None:
    others = [i for i in node.input if i != name]
    return others[0] if len(others) == 1 else None


def _match_composite(g: _Graph, out: str):
    """SiLU (``x * Sigmoid(x)``), HardSwish (``x * HardSigmoid(x)``, below opset 14) and exact GELU
    (``x * 0.5 * (1 + Erf(x / sqrt 2))``), as exporters write them: (activation, output name, nodes)
    or None. TVM fuses the whole pattern into one elementwise kernel, or into the producer of ``x``."""
    users = g.consumers.get(out, [])
    if out in g.outputs or len(users) != 2:
        return None
    by_type = {n.op_type: n for n in users}
    for gate, act in (("Sigmoid", "silu"), ("HardSigmoid", "hardswish")):
        # x * HardSigmoid(x): HardSwish as exported below opset 14
        if set(by_type) == {gate, "Mul"} and (gate == "Sigmoid" or _activation_of(g, by_type[gate]) == "hardsigmoid"):
            sig, mul = by_type[gate], by_type["Mul"]
            if _other_input(mul, out) == sig.output[0] and g.sole_consumer(sig.output[0]) is mul:
                return act, mul.output[0], [sig, mul]
    if set(by_type) == {"Div", "Mul"}:
        div, mul = by_type["Div"], by_type["Mul"]
        d = _const_value(g, div.input[1]) if div.input[0] == out else None
        if d is None or abs(d - 2 ** 0.5) > 1e-3:
            return None
        erf = g.sole_consumer(div.output[0])
        add = g.sole_consumer(erf.output[0]) if erf is not None and erf.op_type == "Erf" else None
        if add is None or add.op_type != "Add" or _const_value(g, _other_input(add, erf.output[0]) or "") != 1.0:
            return None
        if _other_input(mul, out) != add.output[0]:
            return None
        half = g.sole_consumer(mul.output[0])
        if half is not None and half.op_type == "Mul" and _const_value(g, _other_input(half, mul.output[0]) or "") == 0.5:
            return "gelu", half.output[0], [div, erf, add, mul, half]
    return None


def _absorb_activation(g: _Graph, out: str, used: set) -> tuple[str, str]:
    composite = _match_composite(g, out)
    if composite is not None and not any(id(n) in used for n in composite[2]):
        used.update(id(n) for n in composite[2])
        return composite[0], composite[1]
    nxt = g.sole_consumer(out)
    if nxt is not None and _activation_of(g, nxt) is not None:
        used.add(id(nxt))
        return _activation_of(g, nxt), nxt.output[0]
    return "none", out


def _absorb_bias(g: _Graph, node, used: set) -> tuple[bool, str]:
    """A conv's bias: its own, a following ``BatchNormalization`` (folded into the weights and a
    bias) and an ``Add`` of a constant after it. Returns (whether it has one, the output's name)."""
    bias = len(node.input) > 2 and bool(node.input[2])
    out = node.output[0]
    nxt = g.sole_consumer(out)
    if nxt is not None and nxt.op_type == "BatchNormalization":
        used.add(id(nxt))
        bias, out = True, nxt.output[0]
        nxt = g.sole_consumer(out)
    if nxt is not None and nxt.op_type == "Add":
        other = [i for i in nxt.input if i != out]
        if other and other[0] in g.static:
            used.add(id(nxt))
            bias, out = True, nxt.output[0]
    return bias, out


def _absorb_scale(g: _Graph, out: str, used: set) -> str:
    """Absorb a ``Mul`` by a constant (a layer scale, ``gamma * f(x)``) into the kernel whose
    output it scales, as TVM fuses it into the epilogue; the scaled output's name."""
    nxt = g.sole_consumer(out)
    if nxt is not None and nxt.op_type == "Mul" and id(nxt) not in used and any(
            i in g.static for i in nxt.input if i != out):
        used.add(id(nxt))
        return nxt.output[0]
    return out


def _absorb_adds(g: _Graph, out: str, used: set) -> tuple[bool, str]:
    """Absorb a chain of same-shape tensor ``Add``s (each output with one consumer) and an inference
    ``BatchNormalization`` after them: TVM fuses elementwise epilogues into a conv or pool.
    Returns (whether an add was absorbed, the chain's output)."""
    residual = False
    nxt = g.sole_consumer(out)
    while nxt is not None and nxt.op_type == "Add" and id(nxt) not in used:
        other = [i for i in nxt.input if i != out]
        if not other or other[0] in g.static or g.shapes.get(other[0]) != g.shapes.get(out):
            break
        used.add(id(nxt))
        residual, out = True, nxt.output[0]
        nxt = g.sole_consumer(out)
    if residual and nxt is not None and nxt.op_type == "BatchNormalization":
        used.add(id(nxt))
        out = nxt.output[0]
    return residual, out


def _square(values, what: str, node) -> int:
    values = list(values)
    if len(set(values)) != 1:
        raise CodesignError(f"{node.op_type} {node.name!r}: non-square {what} {values} is not supported")
    return int(values[0])


def _group_norm_affine(g: _Graph, node, used: set) -> KernelSpec | None:
    """GroupNorm's ``Reshape -> Mul(scale) -> Add(shift)`` after its InstanceNormalization, as a
    ``batch_norm`` of the reshaped tensor (absorbing one activation); None where it is not there."""
    reshape = g.sole_consumer(node.output[0])
    if reshape is None or reshape.op_type != "Reshape":
        return None
    mul = g.sole_consumer(reshape.output[0])
    if mul is None or mul.op_type != "Mul" or not any(i in g.static for i in mul.input):
        return None
    shape = g.shape(mul.output[0])
    if len(shape) not in (2, 3, 4):
        return None
    shape = (*shape, 1) if len(shape) == 3 else (*shape, 1, 1) if len(shape) == 2 else shape
    out = mul.output[0]
    add = g.sole_consumer(out)
    if add is not None and add.op_type == "Add" and any(i in g.static for i in add.input):
        used.add(id(add))
        out = add.output[0]
    used.add(id(mul))
    act, _ = _absorb_activation(g, out, used)
    return KernelSpec.make("batch_norm", shape, activation=act)


def _as_2d_window(a: dict) -> dict:
    """A 1-D conv's attributes as those of a 2-D one over a 1-high image."""
    a = dict(a)
    if "kernel_shape" in a:
        a["kernel_shape"] = [1, *a["kernel_shape"]]
    for k in ("strides", "dilations"):  # along a 1-high axis any stride or dilation is the same
        if k in a:
            a[k] = [a[k][0], a[k][0]]
    if "pads" in a:
        begin, end = a["pads"]
        a["pads"] = [0, begin, 0, end]
    return a


def _explicit_pads(node, a, kernel: tuple[int, int], in_shape: tuple[int, ...]) -> list[int]:
    """A conv's or pool's ``pads`` (top, left, bottom, right), worked out from the static input
    shape where ``auto_pad`` asks for them (``SAME_UPPER``/``SAME_LOWER``: the output is
    ceil(input / stride); ``VALID``: none), as ONNX defines it."""
    mode = a.get("auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode == "NOTSET":
        return [int(v) for v in (list(a.get("pads", [0, 0, 0, 0])) + [0, 0, 0, 0])[:4]]
    if mode == "VALID":
        return [0, 0, 0, 0]
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise CodesignError(f"{node.op_type} {node.name!r}: unknown auto_pad {mode!r}")
    size = in_shape[2:]
    strides = [int(v) for v in a.get("strides", [1, 1])]
    dilations = [int(v) for v in a.get("dilations", [1, 1])]
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end


def _pads(g: _Graph, node, a) -> int:
    pads = _explicit_pads(node, a, tuple(int(v) for v in a["kernel_shape"]), g.shape(node.input[0]))
    return _square(pads, "padding", node)


def _conv_pads(node, a, kernel: tuple[int, int], in_shape: tuple[int, ...]) -> tuple[int, int]:
    """A conv's (height, width) padding: each axis padded alike at both ends."""
    top, left, bottom, right = _explicit_pads(node, a, kernel, in_shape)
    if top != bottom or left != right:
        raise CodesignError(f"{node.op_type} {node.name!r}: asymmetric padding {[top, left, bottom, right]} "
                            "is not supported")
    return top, left


def onnx_kernels(model, allow_partial: bool = False, skipped: list | None = None) -> list[KernelSpec]:
    """The kernels TVM runs for an ONNX model (path or ModelProto), in graph order.

    Args:
        model: path to an .onnx file or an onnx.ModelProto with static shapes.
        allow_partial: skip ops no builder covers instead of raising (they are appended to
            ``skipped`` when a list is given).

    Raises:
        CodesignError: an op no builder covers (naming it and the supported ops), unknown shapes.
    """
    g = _Graph(_load(model))
    used: set[int] = set()
    specs: list[KernelSpec] = []
    for node in g.nodes:
        if id(node) in used or id(node) in g.weight_side:
            continue
        op = node.op_type
        if op in SKIPPED or op in FUSED_ELEMENTWISE:
            continue
        if op not in KERNEL_OPS:
            if allow_partial:
                if skipped is not None:
                    skipped.append(op)
                continue
            raise CodesignError(
                f"ONNX op {op} (node {node.name!r}) has no kernel builder; supported: {', '.join(supported_ops())} "
                "(pass allow_partial / --partial for a partial total)"
            )
        a = _attrs(node)
        x = node.input[0]
        if op in ("Sigmoid", "HardSigmoid", "Div"):
            composite = _match_composite(g, x)
            if composite is not None and composite[2][0] is node:
                # SiLU / GELU not fused into a producer: one elementwise kernel.
                used.update(id(n) for n in composite[2])
                if len(g.shape(x)) >= 2:
                    specs.append(KernelSpec.make(composite[0], g.shape(x)))
                continue
        if op == "Conv":
            w = g.shape(node.input[1])
            xs = g.shape(x)
            if len(w) == 3 and len(xs) == 3:
                # A 1-D convolution (N, C, L) runs as a 2-D one of a 1-high image, (N, C, 1, L).
                a = _as_2d_window(a)
                w, xs = (*w[:2], 1, w[2]), (*xs[:2], 1, xs[2])
            elif len(w) != 4:
                raise CodesignError(f"Conv {node.name!r}: only 1-D and 2-D convolutions are supported, got a "
                                    f"{len(w) - 2}-D one (weight {tuple(w)})")
            kh, kw = (int(v) for v in a.get("kernel_shape", w[2:]))
            ph, pw = _conv_pads(node, a, (kh, kw), xs)
            stride = _square(a.get("strides", [1, 1]), "stride", node)
            dil = _square(a.get("dilations", [1, 1]), "dilation", node)
            bias, out = _absorb_bias(g, node, used)
            out = _absorb_scale(g, out, used)
            residual, out = _absorb_adds(g, out, used)
            act, out = _absorb_activation(g, out, used)
            specs.append(KernelSpec.make(
                "conv2d", xs, out_channels=w[0], kernel=kh, kernel_w=kw, stride=stride, padding=ph,
                padding_w=pw, dilation=dil, groups=int(a.get("group", 1)), bias=bias, residual=residual, activation=act,
            ))
        elif op == "ConvTranspose":
            w = g.shape(node.input[1])
            if len(w) != 4:
                raise CodesignError(f"ConvTranspose {node.name!r}: only 2-D transposed convolutions are supported, "
                                    f"got a {len(w) - 2}-D one (weight {tuple(w)})")
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or "output_shape" in a:
                raise CodesignError(f"ConvTranspose {node.name!r}: auto_pad and output_shape are not supported; "
                                    "export with explicit pads")
            k = _square(a.get("kernel_shape", w[2:]), "kernel", node)
            stride = _square(a.get("strides", [1, 1]), "stride", node)
            if _square(a.get("dilations", [1, 1]), "dilation", node) != 1:
                raise CodesignError(f"ConvTranspose {node.name!r}: dilated transposed convolutions are not supported")
            pad = _square(a.get("pads", [0, 0, 0, 0]), "padding", node)
            opad = _square(a.get("output_padding", [0, 0]), "output padding", node)
            groups = int(a.get("group", 1))
            bias, out = _absorb_bias(g, node, used)
            act, out = _absorb_activation(g, out, used)
            specs.append(KernelSpec.make("conv2d_transpose", g.shape(x), out_channels=w[1] * groups, kernel=k,
                                         stride=stride, padding=pad, output_padding=opad, groups=groups, bias=bias,
                                         activation=act))
        elif op == "ReduceL2":
            shape = g.shape(x)
            axes = _axes(g, node)
            if axes is None or len(axes) != 1:
                raise CodesignError(f"ReduceL2 {node.name!r}: only a norm over one axis is supported, got axes {axes}")
            axis = int(axes[0]) % len(shape)
            _absorb_l2_division(g, node, x, used)
            # Over a middle axis (F.normalize(x, dim=1)): as many norms as the other axes hold.
            specs.append(KernelSpec.make("l2_normalize", (_prod(shape) // shape[axis], shape[axis])))
        elif op == "Einsum":
            batch, m, k, n = _einsum_matmul(node, a, g.shape(x), g.shape(node.input[1]) if len(node.input) > 1 else None)
            specs.append(KernelSpec.make("batch_matmul", (batch, m, k), n=n))
        elif op in ("Gemm", "MatMul"):
            xs, ws = g.shape(x), g.shape(node.input[1])
            if op == "MatMul" and node.input[1] not in g.static and (len(xs) >= 3 or len(ws) >= 3):
                # Both operands computed at run time (attention): a batched matmul.
                batch = _matmul_batch(node, xs, ws)
                act, _ = _absorb_activation(g, node.output[0], used)
                if _prod(ws[:-2]) == 1:
                    # One right operand shared by every batch (a key shared by all heads): one
                    # (rows, K) x (K, N) product.
                    specs.append(KernelSpec.make("batch_matmul", (1, _prod(xs[:-1]), xs[-1]), n=ws[-1]))
                else:
                    specs.append(KernelSpec.make("batch_matmul", (batch, xs[-2], xs[-1]), n=ws[-1]))
                continue
            if len(xs) < 2 or len(ws) != 2:
                raise CodesignError(f"{op} {node.name!r}: only (..., K) x (K, N) is supported, got {xs} x {ws}")
            trans_b = op == "Gemm" and a.get("transB", 0) == 1
            out_features = ws[0] if trans_b else ws[1]
            bias = op == "Gemm" and len(node.input) > 2 and bool(node.input[2])
            out = node.output[0]
            nxt = g.sole_consumer(out)
            if not bias and nxt is not None and nxt.op_type == "Add" and any(i in g.static for i in nxt.input):
                used.add(id(nxt))
                bias, out = True, nxt.output[0]
            out = _absorb_scale(g, out, used)
            residual, out = _absorb_adds(g, out, used)
            act, out = _absorb_activation(g, out, used)
            # Token-wise layers (..., K) run as one (rows, K) x (K, N) kernel.
            # weight_kn: TVM's importer folds the weight to (K, N), whatever the ONNX node's layout.
            specs.append(KernelSpec.make("dense", (_prod(xs[:-1]), xs[-1]), out_features=out_features, bias=bias,
                                         activation=act, residual=residual, weight_kn=True))
        elif op == "BatchNormalization":
            nxt = g.sole_consumer(node.output[0])
            if nxt is not None and nxt.op_type in ("Conv", "MaxPool") and nxt.input[0] == node.output[0]:
                continue  # fused into the conv or pool that reads it (rule 3)
            act, _ = _absorb_activation(g, node.output[0], used)
            shape = g.shape(x)
            if len(shape) in (2, 3):  # BatchNorm1d over (N, C) or (N, C, L): as (N, C, L, 1)
                shape = (*shape, 1) if len(shape) == 3 else (*shape, 1, 1)
            specs.append(KernelSpec.make("batch_norm", shape, activation=act))
        elif op in ("MaxPool", "AveragePool") and len(a.get("kernel_shape", [])) == 1:
            # A 1-D pool over (N, C, L) (NextViT's token reduction): each output reads its window
            # once, as a global pool over rows of the window does.
            n, c, length = g.shape(x)
            out = g.shape(node.output[0])
            k = int(a["kernel_shape"][0])
            specs.append(KernelSpec.make("global_avg_pool2d", (1, n * c * out[-1], k, 1)))
        elif op in ("MaxPool", "AveragePool"):
            k = _square(a["kernel_shape"], "kernel", node)
            stride = _square(a.get("strides", [1, 1]), "stride", node)
            kind = "max_pool2d" if op == "MaxPool" else "avg_pool2d"
            extra = {"count_include_pad": bool(a.get("count_include_pad", 0))} if kind == "avg_pool2d" else {}
            if _square(a.get("dilations", [1, 1]), "dilation", node) != 1:
                raise CodesignError(f"{op} {node.name!r}: dilated pools are not supported")
            _, out = _absorb_adds(g, node.output[0], used)  # the pool's epilogue (rule 4)
            _absorb_activation(g, out, used)
            specs.append(KernelSpec.make(kind, g.shape(x), kernel=k, stride=stride, padding=_pads(g, node, a),
                                         ceil_mode=bool(a.get("ceil_mode", 0)), **extra))
        elif op in ("GlobalAveragePool", "GlobalMaxPool"):
            shape = g.shape(x)
            if len(shape) != 4:  # (N, C, L) and other ranks: every element of each (n, c) read once
                shape = (shape[0], shape[1], _prod(shape[2:]), 1)
            specs.append(KernelSpec.make("global_avg_pool2d", shape))
        elif op == "ReduceMean" or op in PLAIN_REDUCTIONS:
            shape = g.shape(x)
            axes = _axes(g, node)
            if axes is None and len(node.input) > 1 and node.input[1]:
                raise CodesignError(f"{op} {node.name!r}: reduction axes computed at run time are not supported")
            if not axes and a.get("noop_with_empty_axes", 0):
                continue  # reduces nothing: the identity
            axes = sorted({v % len(shape) for v in (range(len(shape)) if not axes else axes)})
            layer_norm = _match_layer_norm(g, node) if op == "ReduceMean" else None
            if layer_norm is not None:
                # A layer norm as exporters write it below opset 17: one kernel, as LayerNormalization.
                out, nodes = layer_norm
                used.update(id(n) for n in nodes)
                act, _ = _absorb_activation(g, out, used)
                specs.append(KernelSpec.make("layer_norm", (_prod(shape[:-1]), shape[-1]), activation=act))
            elif len(shape) == 4 and axes == [2, 3]:
                specs.append(KernelSpec.make("global_avg_pool2d", shape))
            else:
                # A mean over other axes (tokens: ``x.mean(1)``) reads every element once, as a
                # global pool of (1, kept elements, reduced elements, 1) does.
                reduced = _prod(shape[i] for i in axes)
                specs.append(KernelSpec.make("global_avg_pool2d", (1, _prod(shape) // reduced, reduced, 1)))
        elif op in ("Resize", "Upsample"):
            shape = g.shape(x)
            out_shape = g.shapes.get(node.output[0])
            if out_shape is None:
                raise CodesignError(f"{op} {node.name!r}: the output size is computed at run time; export with "
                                    "static input shapes")
            if len(shape) != 4 or len(out_shape) != 4 or tuple(out_shape[:2]) != tuple(shape[:2]):
                raise CodesignError(f"{op} {node.name!r}: only a resize of the two spatial axes of an (N, C, H, W) "
                                    f"tensor is supported, got {tuple(shape)} -> {tuple(out_shape)}")
            mode = a.get("mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else str(mode)
            method = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)  # Upsample's old names
            if method not in ("nearest", "linear", "cubic"):
                raise CodesignError(f"{op} {node.name!r}: unknown mode {mode!r}")
            if tuple(out_shape) != tuple(shape):  # resizing to the same size copies nothing new
                specs.append(KernelSpec.make("resize2d", shape, out_h=out_shape[2], out_w=out_shape[3], method=method))
        elif op == "LRN":
            specs.append(KernelSpec.make("lrn", g.shape(x), size=int(a["size"])))
        elif op == "InstanceNormalization":
            # Normalises each (sample, channel) over the rest. GroupNorm exports as one over
            # (N, groups, ...), then a Reshape back and the per-channel scale and shift, which TVM
            # runs as a kernel of its own (a batch norm's arithmetic).
            shape = g.shape(x)
            specs.append(KernelSpec.make("instance_norm", (_prod(shape[:2]), _prod(shape[2:]))))
            affine = _group_norm_affine(g, node, used)
            if affine is not None:
                specs.append(affine)
        elif op in ("Softmax", "LayerNormalization"):
            shape = g.shape(x)
            axis = int(a.get("axis", -1))
            if axis < -len(shape) or axis >= len(shape):
                raise CodesignError(f"{op} {node.name!r}: axis {axis} is out of range for a {len(shape)}-D input")
            axis %= len(shape)
            if op == "Softmax" and g.opset < 13:
                # Before opset 13 a softmax normalises the input flattened to 2-D at ``axis``.
                rows = (_prod(shape[:axis]), _prod(shape[axis:]))
            elif op == "LayerNormalization":
                # Normalises over every axis from ``axis`` on.
                rows = (_prod(shape[:axis]), _prod(shape[axis:]))
            else:
                # Over one axis: as many softmaxes as the other axes hold, each of that axis's
                # length (a softmax over a middle axis reads the same elements, strided).
                rows = (_prod(shape) // shape[axis], shape[axis])
            if op == "Softmax":
                specs.append(KernelSpec.make("softmax", rows))
            else:
                act, _ = _absorb_activation(g, node.output[0], used)
                specs.append(KernelSpec.make("layer_norm", rows, activation=act))
        elif _activation_of(g, node) is not None or op in ("Relu", "Clip", "HardSwish", "Sigmoid", "HardSigmoid"):
            act = _activation_of(g, node)
            if act is None:
                raise CodesignError(f"{op} {node.name!r}: only Clip(0, 6), Clip(0, inf) and torch's Hardsigmoid "
                                    "(alpha 1/6, beta 0.5) are supported")
            shape = g.shape(x)
            if len(shape) >= 2:
                specs.append(KernelSpec.make(act, shape))
        elif op in ("Add", "Mul", "Sub"):
            shapes = [g.shapes.get(i) for i in node.input]
            if any(i in g.static for i in node.input) or None in shapes:
                continue  # with a constant: folded into the producer by TVM
            if op == "Mul" and len(set(shapes)) == 2 and len(shapes[0]) == 4 and len(shapes[1]) == 4:
                big, small = sorted(shapes, key=_prod, reverse=True)
                if small == (big[0], big[1], 1, 1):  # a per-channel scale (squeeze-and-excitation)
                    specs.append(KernelSpec.make("mul", big, broadcast=True))
                    continue
            if len(set(shapes)) != 1 or len(shapes[0]) != 4:
                continue  # broadcasts of other shapes ride along with their producers
            if op in ("Add", "Sub"):  # a difference costs as a sum
                act, _ = _absorb_activation(g, node.output[0], used)
                specs.append(KernelSpec.make("add", shapes[0], activation=act))
            else:
                specs.append(KernelSpec.make("mul", shapes[0]))
        elif op == "Div":
            if not any(i in g.static for i in node.input):
                shapes = [g.shapes.get(i) for i in node.input]
                if len(set(shapes)) == 1 and shapes[0] is not None and len(shapes[0]) == 4:
                    specs.append(KernelSpec.make("mul", shapes[0]))  # costs as a multiply
    return specs


def _axes(g: _Graph, node) -> list[int] | None:
    """A reduction's axes: the attribute (up to opset 17) or the constant second input (18 on);
    None when neither is given (all axes) or they are computed at run time."""
    a = _attrs(node)
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(node.input) > 1 and node.input[1] in g.consts:
        return [int(v) for v in g.consts[node.input[1]].reshape(-1)]
    return None


def _reduces_last_axis(g: _Graph, node) -> bool:
    shape = g.shapes.get(node.input[0])
    axes = _axes(g, node)
    return (shape is not None and axes is not None and _attrs(node).get("keepdims", 1) == 1
            and [v % len(shape) for v in axes] == [len(shape) - 1])


def _match_layer_norm(g: _Graph, node):
    """A layer norm over the last axis as exporters write it below opset 17: ``d = x - mean(x)``,
    ``d / sqrt(mean(d^2) + eps)``, then a constant scale and shift. (output name, nodes) or None."""
    x = node.input[0]
    if not _reduces_last_axis(g, node):
        return None
    sub = g.sole_consumer(node.output[0])
    if sub is None or sub.op_type != "Sub" or list(sub.input) != [x, node.output[0]]:
        return None
    d = sub.output[0]
    users = g.consumers.get(d, [])
    if d in g.outputs or len(users) != 2:
        return None
    square = next((u for u in users if (u.op_type == "Pow" and u.input[0] == d and _const_value(g, u.input[1]) == 2.0)
                   or (u.op_type == "Mul" and list(u.input) == [d, d])), None)
    div = next((u for u in users if u.op_type == "Div" and u.input[0] == d), None)
    if square is None or div is None:
        return None
    var = g.sole_consumer(square.output[0])
    if var is None or var.op_type != "ReduceMean" or not _reduces_last_axis(g, var):
        return None
    eps = g.sole_consumer(var.output[0])
    if eps is None or eps.op_type != "Add" or not any(i in g.static for i in eps.input):
        return None
    sqrt = g.sole_consumer(eps.output[0])
    if sqrt is None or sqrt.op_type != "Sqrt" or g.sole_consumer(sqrt.output[0]) is not div or div.input[1] != sqrt.output[0]:
        return None
    nodes, out = [node, sub, square, var, eps, sqrt, div], div.output[0]
    for kind in ("Mul", "Add"):  # the constant scale, then shift
        nxt = g.sole_consumer(out)
        if nxt is None or nxt.op_type != kind or not any(i in g.static for i in nxt.input if i != out):
            break
        nodes.append(nxt)
        out = nxt.output[0]
    return out, nodes


def _absorb_l2_division(g: _Graph, node, x: str, used: set) -> None:
    """``x / max(ReduceL2(x), eps)`` (torch's F.normalize: ReduceL2, Clip with a lower bound only,
    an optional Expand, Div of ``x``) is one kernel: the clip and division join the norm."""
    chain, out = [], node.output[0]
    nxt = g.sole_consumer(out)
    if nxt is not None and nxt.op_type == "Clip" and _clip_bounds(g, nxt)[1] is None:
        chain.append(nxt)
        out = nxt.output[0]
        nxt = g.sole_consumer(out)
    if nxt is not None and nxt.op_type == "Expand":
        chain.append(nxt)
        out = nxt.output[0]
        nxt = g.sole_consumer(out)
    if nxt is not None and nxt.op_type == "Div" and list(nxt.input) == [x, out]:
        used.update(id(n) for n in chain + [nxt])


def _matmul_batch(node, xs, ws) -> int:
    """The batch of a batched MatMul after numpy broadcasting of the operands' leading axes."""
    if len(xs) < 2 or len(ws) < 2 or xs[-1] != ws[-2]:
        raise CodesignError(f"MatMul {node.name!r}: operands {xs} x {ws} do not multiply")
    a, b = list(xs[:-2]), list(ws[:-2])
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + a, [1] * (n - len(b)) + b
    if any(p != q and 1 not in (p, q) for p, q in zip(a, b)):
        raise CodesignError(f"MatMul {node.name!r}: batch axes of {xs} x {ws} do not broadcast")
    return _prod(max(p, q) for p, q in zip(a, b))


def _einsum_matmul(node, a, xs, ws) -> tuple[int, int, int, int]:
    """(batch, M, K, N) of an ``Einsum`` that is a batched matrix product of its two operands (any
    letters, either operand transposed: ``bgid,bgjd->bgij``, ``bik,bkj->bij``, ``ik,kj->ij``)."""
    eq = a.get("equation", b"")
    eq = (eq.decode() if isinstance(eq, bytes) else str(eq)).replace(" ", "")
    refuse = CodesignError(f"Einsum {node.name!r}: only a batched matrix product of two operands is supported, "
                           f"got {eq!r}")
    if ws is None or "->" not in eq or "." in eq or eq.count(",") != 1:
        raise refuse
    lhs, out = eq.split("->")
    x_idx, w_idx = lhs.split(",")
    if len(x_idx) != len(xs) or len(w_idx) != len(ws) or any(len(set(t)) != len(t) for t in (x_idx, w_idx, out)):
        raise refuse
    size = dict(zip(x_idx, xs))
    for letter, dim in zip(w_idx, ws):
        if size.setdefault(letter, dim) != dim:
            raise refuse
    batch = [c for c in out if c in x_idx and c in w_idx]
    rows = [c for c in out if c in x_idx and c not in w_idx]
    cols = [c for c in out if c in w_idx and c not in x_idx]
    reduced = [c for c in x_idx if c in w_idx and c not in out]
    # Letters of one side only may be several (MViTv2's relative positions, ``byhwc,hkc->byhwk``:
    # rows b*y*w per h); every letter must be a batch, row, column or reduced one.
    if (not reduced or set(out) - set(x_idx) - set(w_idx)
            or set(x_idx) != set(batch) | set(rows) | set(reduced) or set(w_idx) != set(batch) | set(cols) | set(reduced)):
        raise refuse
    return (_prod(size[c] for c in batch), _prod(size[c] for c in rows), _prod(size[c] for c in reduced),
            _prod(size[c] for c in cols))


def _prod(shape) -> int:
    p = 1
    for v in shape:
        p *= int(v)
    return p


def export_onnx(module, input_shape: tuple[int, ...]):
    """A torch nn.Module as an onnx.ModelProto (in memory, opset 17, eval mode, BN folded).

    The module's train/eval mode is restored afterwards.
    """
    import io

    import onnx
    import torch

    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    # In eval mode nn.MultiheadAttention and nn.TransformerEncoderLayer take fused fast paths
    # that have no ONNX form; the unfused path computes the same.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is the one that works without onnxscript; its deprecation
            # warning says nothing a user of codesign can act on.
            warnings.simplefilter("ignore", DeprecationWarning)
            # Networks are exported at one static input shape, so shape tests that tracing freezes
            # (``x.shape[2] > 1``) are exactly what the file needs; the warning would only be noise
            # (and `codesign search --quiet` prints nothing but its result).
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(module, (torch.zeros(tuple(input_shape)),), buf, dynamo=False, opset_version=17,
                              do_constant_folding=True, input_names=["input"], output_names=["output"])
    except Exception as exc:
        raise CodesignError(f"torch.onnx.export failed for {type(module).__name__}: {exc}") from exc
    finally:
        module.train(was_training)
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return onnx.load_from_string(buf.getvalue())


def module_kernels(module, input_shape: tuple[int, ...], allow_partial: bool = False) -> list[KernelSpec]:
    """The kernels of a torch nn.Module (exported to ONNX in memory, opset 17, eval mode)."""
    return onnx_kernels(export_onnx(module, input_shape), allow_partial=allow_partial)
