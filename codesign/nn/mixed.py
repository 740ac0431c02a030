"""A supernet edge choosing among candidate ops, computed by ``codesign.mixed_op``.

``forward(x, weights)`` mixes every candidate (DARTS); ``forward(x, weights, index=k)`` runs only
candidate k, scaled by ``weights[k]`` (GDAS/FBNet single path: with a hard straight-through
Gumbel sample, ``weights[k]`` is 1 in forward and carries the gradient to every logit).

Two formulations compute the same numbers:

- the *reference* edge (``codesign.use_backend("reference")`` or ``fused=False``): DARTS as
  written, ``sum_k w_k * op_k(x)``, every candidate a torch module applied to x, pools
  materialised, every intermediate kept for backward;
- the *fused* edge (the default):

  * parameter-free candidates (zero, identity, 3x3 pools) never become tensors: the fused op
    computes them inside its kernel and recomputes them in backward;
  * the ReLU that candidates apply to the edge's input is computed once per edge and shared
    (candidates declare it: a ``forward_after_relu(relu_x)`` method, or an ``nn.Sequential``
    whose first module is an ``nn.ReLU``);
  * checkpointing (``checkpoint=True``; the spaces turn it on in their first stage, see
    :func:`edge_checkpoint`): nothing inside the edge is kept for backward but its input; the
    candidates run again in backward, one edge at a time, so the outputs ``y_k`` and their
    intermediates never accumulate over the network (``torch.utils.checkpoint``; batch norms do
    not update their running statistics a second time; the mix itself is not computed again,
    only the maps its backward reads);
  * single path (``index``): only the sampled candidate runs; ``none`` does no work at all.

Partial channels (PC-DARTS, Xu et al. 2020; ``partial_channels=K``): only the first C/K channels
of x go through the mixed op (the space builds the candidates at C/K channels), the others
bypass it (max-pooled 2x2 where the edge has stride 2); the two parts are concatenated and the
channels shuffled in K groups, so that every channel takes the mixed op on some edges.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from .. import reference
from ..errors import CodesignError
from ..ops import batch_norm_relu, current_backend, depthwise_conv2d, mixed_op, mixed_op_saves

# Option names of the spaces that map to the fused op's parameter-free candidates.
FREE_OPTION = {
    "none": "zero", "zero": "zero",
    "skip_connect": "identity", "skip": "identity", "identity": "identity",
    "avg_pool_3x3": "avg_pool_3x3", "max_pool_3x3": "max_pool_3x3",
}


# What the fused formulation does beyond the fused op; every switch is on by default, and
# benchmarks/search.py turns them off one at a time to measure what each one gains.
FEATURES = {"channels_last": True, "shared_relu": True, "conv_bn_kernels": True, "arch_grads_only": True}


@contextlib.contextmanager
def fused_features(**switches: bool):
    """Turn parts of the fused formulation off (or on) inside the block, process-wide:
    ``channels_last`` (supernets run channels_last on the CPU), ``shared_relu`` (one ReLU of the
    edge's input for all its candidates), ``conv_bn_kernels`` (candidates' dilated depthwise
    convs and BN (+ ReLU) epilogues on codesign's kernels) and ``arch_grads_only`` (an architecture step
    computes no gradient of the network's weights: see :func:`weights_frozen`). Checkpointing is
    a supernet option of its own."""
    unknown = set(switches) - set(FEATURES)
    if unknown:
        raise ValueError(f"fused_features: unknown switch {sorted(unknown)}; known: {', '.join(FEATURES)}")
    previous = dict(FEATURES)
    FEATURES.update({k: bool(v) for k, v in switches.items()})
    try:
        yield
    finally:
        FEATURES.update(previous)


def fused_path(fused: bool = True) -> bool:
    """Whether a supernet runs its fused formulation: asked for, and the backend not forced to
    the plain-torch reference."""
    return fused and current_backend() != "reference"


@contextlib.contextmanager
def weights_frozen(net: nn.Module, fused: bool = True):
    """A first-order architecture step inside the block computes the gradient of the
    architecture only: the network's weights stop requiring gradients, so no convolution or batch
    norm computes a weight gradient that the step would throw away (DARTS as written computes
    them all, then zeroes them), and the first edges keep nothing for backward. Where the fused
    formulation is off (or ``arch_grads_only`` is), the block changes nothing."""
    params = [p for p in net.parameters() if p.requires_grad] if (
        fused_path(fused) and FEATURES["arch_grads_only"]) else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def supernet_input(x: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """The input of a supernet's stem: channels_last on the CPU for the fused formulation (the
    convolutions and codesign's NHWC kernels are fastest there), unchanged otherwise."""
    if fused_path(fused) and FEATURES["channels_last"] and x.device.type == "cpu" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def supernet_options(space: str, partial_channels, checkpoint, channels: int, smallest: int = 1) -> tuple[int, bool | None]:
    """A space's supernet options, validated: (partial_channels, checkpoint).

    Raises:
        CodesignError: partial_channels not an int >= 1 dividing ``channels`` into groups of at
            least ``smallest`` channels; checkpoint not 0, 1, a bool or None.
    """
    if isinstance(partial_channels, bool) or not isinstance(partial_channels, int) or partial_channels < 1:
        raise CodesignError(f"{space} space: partial_channels must be an int >= 1, got {partial_channels!r}")
    if channels % partial_channels or channels // partial_channels < smallest:
        raise CodesignError(f"{space} space: partial_channels={partial_channels} must divide c={channels} into "
                            f"groups of at least {smallest} channels")
    if checkpoint is not None and checkpoint not in (0, 1):  # True/False compare equal to 1/0
        raise CodesignError(f"{space} space: checkpoint must be 0 or 1, got {checkpoint!r}")
    return partial_channels, None if checkpoint is None else bool(checkpoint)


def edge_checkpoint(option: bool | None, c: int, base_c: int) -> bool | None:
    """The ``checkpoint`` of the edges of a supernet cell at ``c`` channels, in a supernet whose
    first cells have ``base_c``: the space's option where one was given; by default the cells at
    the first stage's width recompute their candidates in backward and every later cell stores
    them. The first stage has the largest maps: in these spaces a cell's compute stays about the
    same as the width doubles and the maps halve, while what it stores halves, so the first stage
    is where a stored activation costs the most memory for the recompute it saves.

    Measured (benchmarks/search.py --part supernet, NB201 c=16, 2 cells a stage, darts): storing
    every edge peaks at ~0.49 of the reference's RSS, recomputing the first stage at ~0.43 for a
    1.2x slower step, recomputing every edge at ~0.39 for 1.35x."""
    if option is not None:
        return option
    return c <= base_c


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: [N, G*C', H, W] -> channel g*C' + j moves to j*G + g."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _chain(module: nn.Module) -> list[nn.Module] | None:
    """The modules a (nested) plain ``nn.Sequential`` runs, in order; None for anything else."""
    if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
        return None
    out: list[nn.Module] = []
    for m in module:
        sub = _chain(m)
        out += [m] if sub is None else sub
    return out


def _is_depthwise(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == m.in_channels == m.out_channels and m.bias is None
            and m.padding_mode == "zeros" and not isinstance(m.padding, str)
            and len(set(m.kernel_size)) == len(set(m.stride)) == len(set(m.padding)) == len(set(m.dilation)) == 1)


def run_chain(steps: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Runs modules in order as the fused formulation does: dilated depthwise convolutions and
    batch norms (with the ReLU that follows one, as a single epilogue) on codesign's kernels,
    where ``FEATURES["conv_bn_kernels"]`` is on and they take the map; any other module as
    itself (undilated depthwise convolutions too: torch's are mostly faster, 0.64-1.16x for
    codesign's in benchmarks/kernels.py, against 1.46-2.93x for codesign's dilated ones)."""
    i = 0
    kernels = FEATURES["conv_bn_kernels"]
    book = _active_book()
    while i < len(steps):
        m = steps[i]
        if kernels and type(m) is nn.BatchNorm2d:
            relu = i + 1 < len(steps) and type(steps[i + 1]) is nn.ReLU
            # a convolution's output, kept by nothing else: the BN may write over it
            inplace = i > 0 and type(steps[i - 1]) is nn.Conv2d
            on_output = _bn_relu_recipe(book, m, x) if book is not None and relu else None
            x = batch_norm_relu(x, m, relu, inplace=inplace, on_output=on_output)
            i += 2 if relu else 1
            continue
        if kernels and _is_depthwise(m) and m.dilation[0] > 1:
            # stored, not recomputed: in these spaces a depthwise conv costs as much as the
            # pointwise one beside it (recomputing them made the DARTS step 1.16x slower)
            x = depthwise_conv2d(x, m.weight, m.stride[0], m.padding[0], m.dilation[0])
        elif book is not None and type(m) is nn.ReLU:
            x = book.note(F.relu(x), F.relu, x)
        else:
            x = m(x)
        i += 1
    return x


def _bn_relu_recipe(book, bn: nn.BatchNorm2d, bn_in: torch.Tensor):
    """What the BN + ReLU kernel calls with its output and batch statistics, before autograd
    keeps any map: notes the output's recipe, one elementwise pass from the BN's input (which the
    BN keeps). A BN without a ReLU is given none: its output is what its backward and the mix
    keep, and recomputing it from the 1x1 conv before it (tried) kept 0.21 of the reference's
    activations instead of 0.32 on NB201 but made the darts step 1.10x and gdas's 1.11x slower."""
    def on_output(out, mean, var):
        scale = (bn.weight.detach() * torch.rsqrt(var + bn.eps)).reshape(1, -1, 1, 1)
        shift = bn.bias.detach().reshape(1, -1, 1, 1) - mean.reshape(1, -1, 1, 1) * scale
        book.note(out, lambda t, a=scale, b=shift: torch.relu(t * a + b), bn_in)

    return on_output


_ACTIVE = threading.local()  # .book: the recipe book of the edge this thread is computing;
# .recomputing: a checkpointed edge's recomputation in backward is running (see _recomputation)


def _active_book():
    return getattr(_ACTIVE, "book", None)


@contextlib.contextmanager
def _recomputing(book):
    previous = _active_book()
    _ACTIVE.book = book
    try:
        yield
    finally:
        _ACTIVE.book = previous


def run_fused(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, plain sequential chains run by :func:`run_chain`."""
    steps = _chain(module)
    return module(x) if steps is None else run_chain(steps, x)


def after_relu(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``body`` with ``module(x) == body(relu(x))`` when the module starts with a ReLU of its
    input (so an edge can compute that ReLU once for all its candidates), else None: a
    ``forward_after_relu`` method of the module, or the rest of a sequential chain that starts
    with an ``nn.ReLU`` (run by :func:`run_chain`)."""
    method = getattr(module, "forward_after_relu", None)
    if method is not None:
        return method
    steps = _chain(module)
    if steps and type(steps[0]) is nn.ReLU:
        rest = steps[1:]  # the same modules, not registered a second time
        return lambda xr: run_chain(rest, xr)
    return None


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module):
    """Batch norms inside ``module`` normalise with the batch's statistics as in training but
    leave their running statistics (and batch counts) as they were: what a recomputation in
    backward must do, since the forward already updated them."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.training and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for m, (momentum, count) in zip(bns, saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


@contextlib.contextmanager
def _recomputation(edge: nn.Module):
    """The context of a checkpointed edge's recomputation in backward: running statistics left as
    they are, and the mix's output not computed (only the maps its backward reads)."""
    previous = getattr(_ACTIVE, "recomputing", False)
    _ACTIVE.recomputing = True
    try:
        with frozen_running_stats(edge):
            yield
    finally:
        _ACTIVE.recomputing = previous


class _Relu(torch.autograd.Function):
    """``relu(x)`` that keeps x for backward (the mask x > 0), not its output."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.relu(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, x, 0)  # grad where x > 0, as relu's own backward


class _Recipe:
    """How to compute a map again: ``fn(*inputs)``, each input a (detached) tensor, another
    recipe, or a tensor packed by the saved-tensor hooks around the book (``_Packed``)."""

    __slots__ = ("fn", "inputs", "value")

    def __init__(self, fn, inputs):
        self.fn, self.inputs, self.value = fn, inputs, None

    def __call__(self) -> torch.Tensor:
        """The map, computed at the first call and kept for the other readers of the same recipe
        (a candidate's output is read by the mix's backward and by its BN's): the recipe, and
        with it the map, goes when the last op that saved it has run backward."""
        if self.value is None:
            with torch.no_grad():
                self.value = self.fn(*[t() if isinstance(t, (_Recipe, _Packed)) else t for t in self.inputs])
        return self.value


class _Packed:
    """A tensor as the saved-tensor hooks around a recipe book packed it (an outer checkpoint,
    offloading, a memory count), unpacked by them once, when a recipe first needs it (those hooks
    may allow one unpack per pack: torch's checkpoint does), and kept for the recipe's other
    readers."""

    __slots__ = ("unpack", "packed", "value")

    def __init__(self, unpack, packed):
        self.unpack, self.packed, self.value = unpack, packed, None

    def __call__(self) -> torch.Tensor:
        if self.value is None:
            self.value = self.unpack(self.packed)
            self.packed = None
        return self.value


def _outer_hooks():
    """The saved-tensor hooks active now, (pack, unpack), or None."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top(False) if top is not None else None


def recipes_allowed() -> bool:
    """Whether saved-tensor hooks may be installed here (not under
    ``torch.autograd.graph.disable_saved_tensors_hooks``)."""
    enabled = getattr(torch._C._autograd, "_saved_tensors_hooks_is_enabled", None)
    return enabled is None or bool(enabled())


class Recomputed:
    """Selective recomputation of cheap maps inside a block (``with book.hooks():``): a map
    registered with :meth:`note` (the output of the edge's shared ReLU, or of a candidate's
    BN + ReLU epilogue) is not kept by the ops that save it for backward; they keep its recipe
    (its input: a map that is kept anyway) and get it computed again, one elementwise pass, when
    their backward runs. The expensive maps (convolutions' outputs, the candidates' outputs)
    stay stored. A map is recognised by its memory and layout while it is alive (a weak
    reference: memory freed and taken again by another map never matches)."""

    def __init__(self):
        self._recipes: dict[tuple, tuple[weakref.ref, _Recipe]] = {}
        self._outer = _outer_hooks()  # what the maps a recipe reads go through, as any saved map

    @staticmethod
    def _key(t: torch.Tensor) -> tuple:
        return t.data_ptr(), tuple(t.shape), t.stride(), t.dtype

    def _recipe(self, t: torch.Tensor) -> _Recipe | None:
        entry = self._recipes.get(self._key(t))
        return entry[1] if entry is not None and entry[0]() is not None else None

    def note(self, out: torch.Tensor, fn, *inputs: torch.Tensor) -> torch.Tensor:
        """Registers ``out == fn(*inputs)`` (computed without autograd); returns out."""
        ins = tuple(self._recipe(t) or self._keep(t) for t in inputs)
        self._recipes[self._key(out)] = (weakref.ref(out), _Recipe(fn, ins))
        return out

    def _keep(self, t: torch.Tensor):
        """How a recipe keeps a map it reads: detached (no path back into the graph that holds
        the recipe), through the outer hooks where there are any."""
        t = t.detach()
        return t if self._outer is None else _Packed(self._outer[1], self._outer[0](t))

    def close(self) -> None:
        """Forgets the maps noted (after the block: the ops that saved them hold their recipes)."""
        self._recipes.clear()

    def hooks(self):
        """The saved-tensor hooks of the block. Maps without a recipe go to the hooks that were
        active around the block (an outer checkpoint, offloading, a memory count), if any."""
        outer_pack, outer_unpack = self._outer if self._outer is not None else (None, None)

        def pack(t):
            recipe = self._recipe(t)
            if recipe is not None:
                return recipe
            if outer_pack is not None:
                return (_Outer, outer_pack(t))
            # detached: an op that saves its own output must not hold its graph node through
            # the hook (a reference cycle when the graph is not run backward)
            return t.detach()

        def unpack(t):
            if isinstance(t, _Recipe):
                return t()
            if isinstance(t, tuple) and len(t) == 2 and t[0] is _Outer:
                return outer_unpack(t[1])
            return t

        return torch.autograd.graph.saved_tensors_hooks(pack, unpack)


class _Outer:
    """Marks a map packed by the saved-tensor hooks around a recipe book's block."""


class _Scaled(torch.autograd.Function):
    """``y * w`` for a single path's sampled candidate y and its scalar weight w (a hard
    straight-through Gumbel sample: exactly 1 in forward). With w == 1 the forward returns y
    itself and backward passes the gradient on as it is, so a single path spends no pass over
    its map on the scaling; the weight's gradient is one dot product, sum(grad * y)."""

    @staticmethod
    def forward(ctx, y, w):
        one = bool(w == 1)
        ctx.one = one
        ctx.save_for_backward(y if ctx.needs_input_grad[1] else None, w)
        return y.view_as(y) if one else y * w

    @staticmethod
    def backward(ctx, grad):
        y, w = ctx.saved_tensors
        grad_y = None
        if ctx.needs_input_grad[0]:
            grad_y = grad if ctx.one else grad * w
        grad_w = None
        if ctx.needs_input_grad[1]:
            if grad.stride() == y.stride() and grad.is_contiguous(memory_format=_format(y)):
                flat = _flat(grad), _flat(y)
                grad_w = torch.dot(flat[0], flat[1]).reshape(w.shape).to(w.dtype)
            else:
                grad_w = (grad * y).sum().reshape(w.shape).to(w.dtype)
        return grad_y, grad_w


def _format(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous() else torch.contiguous_format


def _flat(t: torch.Tensor) -> torch.Tensor:
    """A dense map as one flat vector over its memory (no copy)."""
    return t.permute(0, 2, 3, 1).reshape(-1) if _format(t) is torch.channels_last else t.reshape(-1)


def scaled(y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``y * w`` for a one-element weight w, without a pass over y where w is 1 (see _Scaled)."""
    if w.numel() != 1 or w.dtype != y.dtype or w.device != y.device:
        return y * w.reshape(())
    return _Scaled.apply(y, w.reshape(()))


def _deep(module: nn.Module) -> bool:
    """Whether a candidate keeps maps of its own for backward beyond its output: more than one
    convolution (a separable or dilated conv's depthwise and pointwise stages, an inverted
    residual). A one-convolution candidate (ReLU-conv-BN) keeps only its output, which the mix
    keeps anyway, so recomputing it would save that one map at the price of running it again."""
    return sum(isinstance(m, nn.Conv2d) for m in module.modules()) > 1


class MixedEdge(nn.Module):
    """Candidates ``options`` (names) of one decision; ``modules[name]`` for parametric ones.

    Args:
        options: option names; those without a module must be parameter-free (``FREE_OPTION``).
        modules: the parametric candidates (at C / partial_channels channels).
        stride: the edge's stride.
        partial_channels: K of PC-DARTS (1: every channel goes through the mixed op).
        checkpoint: recompute the candidates in backward instead of storing their outputs; None
            (default) does it where it pays most: soft mixes of two or more parametric
            candidates, one of which keeps maps beyond its output (see _deep).
    """

    def __init__(self, options: list[str], modules: dict[str, nn.Module], stride: int = 1,
                 partial_channels: int = 1, checkpoint: bool | None = None):
        super().__init__()
        if isinstance(partial_channels, bool) or not isinstance(partial_channels, int) or partial_channels < 1:
            raise ValueError(f"MixedEdge: partial_channels must be an int >= 1, got {partial_channels!r}")
        self.options = list(options)
        self.stride = stride
        self.partial = partial_channels
        self.free = {}
        for name in self.options:
            if name in modules:
                continue
            free = FREE_OPTION.get(name)
            if free is None or (free == "identity" and stride != 1):
                raise ValueError(f"MixedEdge: option {name!r} needs a module at stride {stride}")
            self.free[name] = free
        self.parametric = [n for n in self.options if n not in self.free]
        self.ops = nn.ModuleDict({n: modules[n] for n in self.parametric})
        order = self.parametric + list(self.free)
        # weights are given in option order; the fused op wants [parametric..., free...]
        self.register_buffer("perm", torch.tensor([self.options.index(n) for n in order]), persistent=False)
        self.free_names = [self.free[n] for n in self.free]
        # Plain attributes (not submodules): views of the candidates after their leading ReLU.
        self._after_relu = {n: after_relu(self.ops[n]) for n in self.parametric}
        self.checkpoint = (len(self.parametric) >= 2 and any(_deep(self.ops[n]) for n in self.parametric)
                           if checkpoint is None else bool(checkpoint))

    # --- the fused edge ---------------------------------------------------------------------
    def _candidates(self, x: torch.Tensor, names: list[str], then, keeps: bool = False):
        """``then(ys)`` for the outputs ys of the parametric candidates ``names`` on x, their
        shared ReLU computed once. ``keeps``: autograd keeps what the candidates and ``then``
        save for backward (no checkpoint around them); the maps one elementwise pass gives
        back are then not kept but recomputed where backward reads them (the shared ReLU's and
        BN + ReLU outputs: see run_chain)."""
        def outputs(xr):
            return [run_fused(self.ops[n], x) if xr is None or self._after_relu[n] is None
                    else self._after_relu[n](xr) for n in names]

        if not FEATURES["shared_relu"] or not any(self._after_relu[n] is not None for n in names):
            return then(outputs(None))
        if not (keeps and torch.is_grad_enabled() and recipes_allowed() and (x.requires_grad or any(
                p.requires_grad for n in names for p in self.ops[n].parameters()))):
            return then(outputs(F.relu(x)))
        book = Recomputed()
        try:
            xr = book.note(_Relu.apply(x), F.relu, x)
            with book.hooks(), _recomputing(book):
                return then(outputs(xr))
        finally:
            book.close()

    def _mix(self, x: torch.Tensor, w: torch.Tensor, keeps: bool = False) -> torch.Tensor:
        """The fused mix of every candidate on x, w in [parametric..., free...] order."""
        return self._candidates(x, self.parametric, lambda ys: self._combine(x, ys, w), keeps)

    def _combine(self, x: torch.Tensor, ys: list[torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        if all(y.shape[1] == x.shape[1] for y in ys):
            if getattr(_ACTIVE, "recomputing", False):  # a checkpoint needs only what the op saves
                return mixed_op_saves(x, ys, w, self.free_names, self.stride)
            return mixed_op(x, ys, w, self.free_names, self.stride)
        self._check_free_with_width_change()
        out = 0
        for k, y in enumerate(ys):
            out = out + w[k] * y
        return out

    def _fused(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        w = weights[self.perm]
        xs, rest = self._split(x)
        if self.checkpoint and self.parametric and torch.is_grad_enabled():
            out = torch_checkpoint(self._mix, xs, w, use_reentrant=False, preserve_rng_state=False,
                                   context_fn=lambda: (contextlib.nullcontext(), _recomputation(self)))
        else:
            out = self._mix(xs, w, keeps=True)
        return self._merge(out, rest, shuffle_in_place=True)

    def _single_fused(self, x: torch.Tensor, weights: torch.Tensor, index: int) -> torch.Tensor | None:
        name = self.options[index]
        w = weights[index:index + 1]
        xs, rest = self._split(x)
        if name in self.free:
            if self.free[name] == "zero":
                if rest is None:
                    return None  # contributes nothing: callers skip it
                out = xs.new_zeros(self._out_shape(xs))
            else:
                out = mixed_op(xs, [], w, [self.free[name]], self.stride)
        else:
            out = self._candidates(xs, [name], lambda ys: scaled(ys[0], w), keeps=True)
        return self._merge(out, rest, shuffle_in_place=True)

    # --- the reference edge -----------------------------------------------------------------
    def _reference(self, x: torch.Tensor, weights: torch.Tensor, index: int | None) -> torch.Tensor:
        xs, rest = self._split(x)
        ys = {n: self.ops[n](xs) for n in self.parametric if index is None or self.options[index] == n}
        widens = any(y.shape[1] != xs.shape[1] for y in ys.values())
        out = 0
        for k, name in enumerate(self.options):
            if index is not None and k != index:
                continue
            if name in ys:
                term = ys[name]
            elif widens:  # only zero can mix with candidates that change the width
                self._check_free_with_width_change()
                continue
            else:
                term = reference.free_op(self.free[name], xs, self.stride)
            out = out + weights[k] * term
        return self._merge(out, rest, shuffle_in_place=False)

    # --- shared pieces ----------------------------------------------------------------------
    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.partial == 1:
            return x, None
        c = x.shape[1]
        if c % self.partial:
            raise ValueError(f"MixedEdge: {c} channels do not split into partial_channels={self.partial} groups")
        cp = c // self.partial
        rest = x[:, cp:]
        if self.stride != 1:
            rest = F.max_pool2d(rest, 2, 2, ceil_mode=True)
        return x[:, :cp], rest

    def _merge(self, out: torch.Tensor, rest: torch.Tensor | None, shuffle_in_place: bool) -> torch.Tensor:
        if rest is None:
            return out
        k = self.partial
        if not shuffle_in_place:
            return channel_shuffle(torch.cat([out, rest], dim=1), k)
        # cat + shuffle as one copy: output channel j*K + g is group g's channel j
        n, cp, h, w = out.shape
        return torch.cat([out.unsqueeze(2), rest.unflatten(1, (k - 1, cp)).transpose(1, 2)], dim=2).flatten(1, 2)

    def _out_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        n, c, h, w = x.shape
        return (n, c, (h - 1) // self.stride + 1, (w - 1) // self.stride + 1)

    def _check_free_with_width_change(self) -> None:
        for n in self.free:
            if self.free[n] != "zero":
                raise ValueError(f"MixedEdge: option {n!r} cannot mix with channel-changing candidates")

    def forward(self, x: torch.Tensor, weights: torch.Tensor, index: int | None = None,
                fused: bool = True) -> torch.Tensor | None:
        """The edge's output [N, C, H', W'] on x [N, C, H, W]; None when a single path samples
        ``none`` on the fused formulation (nothing to add: see :func:`sum_paths`)."""
        if not fused_path(fused):
            return self._reference(x, weights, index)
        if index is not None:
            return self._single_fused(x, weights, index)
        return self._fused(x, weights)


def sum_paths(terms: list[torch.Tensor | None], like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The sum of a node's incoming edges, skipping the ones that contributed nothing (a zeros
    map of ``shape``, like ``like``, when none did)."""
    out = None
    for t in terms:
        if t is not None:
            out = t if out is None else out + t
    return like.new_zeros(shape) if out is None else out
