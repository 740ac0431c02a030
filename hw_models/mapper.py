"""The analytical mapper: one layer on one accelerator config -> cycles, energy per level, PE
utilisation, access counts, with the best loop tiling by energy-delay product.

Everything numeric lives in one function, ``_eval_pair``, on flat float64 rows (``encode_layer``,
``encode_config``), so that numba compiles it for batches of (layer, config) pairs and the same
source runs as plain Python as the reference (``evaluate_rows(..., jit=False)``).

The model
---------
A layer is the 7-deep convolution loop nest over N (batch), G (groups), K (output channels per
group), C (input channels per group), P x Q (output rows x columns) and R x S (kernel), with stride
U and dilation D; dense layers are N x K x C with P = Q = R = S = 1; pools are weight-free
depthwise convolutions (one compare/add per window element, costed as a MAC); elementwise kernels
stream their operands once.

Data moves through four levels: DRAM -> global buffer (GLB) -> the PE array's network (NoC) ->
the register file (RF) of each PE -> MAC. Access counts follow the Eyeriss analysis framework
(Chen et al., ISCA 2016, Section V): every use of a value is reached through reuse factors a
(DRAM), b (GLB), c (array) and d (RF) with a*b*c*d = the value's number of uses, so a weight or
input costs a*E_dram + a*b*E_glb + a*b*c*E_hop + a*b*c*d*E_rf and a partial sum
(2a-1)*E_dram + 2a(b-1)*E_glb + ab(c-1)*E_hop + 2abc(d-1)*E_rf.

Search (per pair):

1. DRAM level: the GLB tile (k_t output channels, c_t input channels, n_t images x p_t output rows,
   each halved down from the full size) and the loop order above it (which operand stays in the
   GLB: weights, inputs or outputs) with the fewest DRAM words, among the tiles whose weights +
   input rows (halo included) + outputs fit the GLB. This fixes a for every operand and the DRAM
   cycles. On-chip energy does not depend on this choice (a*b is fixed by c and d), so the two
   searches separate.
2. Array and RF level, per dataflow: the spatial unrolling (two candidates) and the RF tile (powers
   of two that fit the RF) fix c and d and the compute cycles:
   - ws: rows <- C*R*S (the reduction), cols <- K; the weight stays in its PE; inputs are
     broadcast along rows, partial sums reduced down columns (NVDLA/TPU style).
   - os: each PE accumulates its outputs in place; (a) rows <- P, cols <- Q with weights broadcast
     and inputs passed between neighbours (ShiDianNao), or (b) rows <- K, cols <- N*P*Q; the RF
     holds k_rf partial sums so an input is reused k_rf times.
   - rs: rows <- R (filter rows), cols <- P (output rows), replicated over C or K to fill the
     array; each PE runs 1-D convolutions of p filters x q channels with S-tap rows in its RF
     (weights p*q*S + inputs q*S + partial sums p words); weights reused along Q and across
     columns, inputs along the PE diagonals, partial sums accumulated down columns.
   The candidate with the smallest energy x cycles is kept.
3. Cycles = max(compute cycles, DRAM cycles): the GLB is assumed to double-buffer DRAM traffic.

A layer none of whose tiles fits is infeasible: ``feasible`` is 0, ``reason`` says which level
(REASON_RF, REASON_GLB), and latency and energy are +inf, never 0.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import warnings

import numpy as np

from codesign.errors import CodesignError
from codesign.kernelspec import KernelSpec
from codesign.paths import cache_dir

from .accelerator import DATAFLOWS, AcceleratorConfig

# Layer row fields.
L_KIND, L_N, L_G, L_K, L_C, L_P, L_Q, L_R, L_S, L_U, L_D, L_H, L_W, L_NIN, L_HASW = range(15)
LAYER_FIELDS = 15
KIND_CONV, KIND_ELEMENTWISE = 0.0, 1.0

# Config row fields.
(C_ROWS, C_COLS, C_RF, C_GLB, C_BPC, C_CLOCK, C_DATAFLOW, C_E_MAC, C_E_RF_R, C_E_RF_W, C_E_HOP,
 C_E_GLB_R, C_E_GLB_W, C_E_DRAM_R, C_E_DRAM_W, C_AREA, C_SYSTOLIC) = range(17)
CONFIG_FIELDS = 17

# Result row fields.
RESULT_NAMES = (
    "feasible", "reason", "cycles", "latency_ms", "energy_mj", "mac_energy_mj", "rf_energy_mj",
    "noc_energy_mj", "glb_energy_mj", "dram_energy_mj", "pe_utilization", "macs", "dram_words",
    "glb_accesses", "noc_hops", "rf_accesses", "area_mm2", "edp_mj_cycles", "compute_cycles",
    "dram_cycles", "map_order", "map_k_tile", "map_c_tile", "map_n_tile", "map_p_tile",
    "map_spatial", "map_rf_a", "map_rf_b", "fill_cycles",
)
R = {name: i for i, name in enumerate(RESULT_NAMES)}
RESULT_FIELDS = len(RESULT_NAMES)
REASON_OK, REASON_RF, REASON_GLB = 0, 1, 2
REASONS = {REASON_OK: "", REASON_RF: "register file too small for any tile of this layer",
           REASON_GLB: "global buffer too small for any tile of this layer"}
ORDERS = ("weights stay in GLB", "inputs stay in GLB", "outputs stay in GLB", "streaming")

# Operations per element of the kernels that stream their operands once (rows over the last axis
# for the normalisations; an exponential or erf counted as 4, as kernelspec.kernel_flops does).
_ELEMENTWISE_OPS = {"batch_norm": 2.0, "relu": 1.0, "relu6": 1.0, "hardswish": 4.0, "sigmoid": 4.0,
                    "add": 1.0, "mul": 1.0, "hardsigmoid": 3.0, "silu": 5.0, "gelu": 8.0, "tanh": 4.0,
                    "softmax": 5.0, "layer_norm": 5.0, "l2_normalize": 3.0,
                    "leaky_relu": 2.0, "instance_norm": 7.0}


def encode_layer(spec: KernelSpec) -> np.ndarray:
    """The float64 row of one kernel (see the module docstring for the loop nest)."""
    if not isinstance(spec, KernelSpec):
        raise CodesignError(f"a layer is a codesign KernelSpec, got {type(spec).__name__}")
    row = np.zeros(LAYER_FIELDS)
    row[L_U] = row[L_D] = row[L_NIN] = 1.0
    s = spec.input_shape
    if spec.op == "conv2d":
        n, c, h, w = s
        _, k, p, q = spec.output_shape()
        g = spec.attr("groups")
        (kr, ks), (pad_h, pad_w) = spec.kernel_hw(), spec.padding_hw()
        row[[L_N, L_G, L_K, L_C, L_P, L_Q, L_R, L_S]] = n, g, k // g, c // g, p, q, kr, ks
        row[L_U], row[L_D] = spec.attr("stride"), spec.attr("dilation")
        row[L_H] = _footprint(p, row[L_U], kr, row[L_D], h, pad_h)
        row[L_W] = _footprint(q, row[L_U], ks, row[L_D], w, pad_w)
        row[L_HASW] = 1.0
    elif spec.op == "dense":
        n, c = s
        row[[L_N, L_G, L_K, L_C, L_P, L_Q, L_R, L_S, L_H, L_W]] = n, 1, spec.attr("out_features"), c, 1, 1, 1, 1, 1, 1
        row[L_HASW] = 1.0
    elif spec.op in ("avg_pool2d", "max_pool2d", "global_avg_pool2d"):
        n, c, h, w = s
        _, _, p, q = spec.output_shape()
        if spec.op == "global_avg_pool2d":
            kr, ks, stride, pad = h, w, 1, 0
        else:
            kr = ks = spec.attr("kernel")
            stride, pad = spec.attr("stride"), spec.padding()
        row[[L_N, L_G, L_K, L_C, L_P, L_Q, L_R, L_S]] = n, c, 1, 1, p, q, kr, ks
        row[L_U] = stride
        row[L_H] = _footprint(p, stride, kr, 1, h, pad)
        row[L_W] = _footprint(q, stride, ks, 1, w, pad)
    elif spec.op == "batch_matmul":
        # (batch, M, K) @ (batch, K, n): one group per batch entry, its second operand the group's
        # weights, M output rows of n outputs reducing over K.
        b, m, kk = s
        row[[L_N, L_G, L_K, L_C, L_P, L_Q, L_R, L_S, L_H, L_W]] = 1, b, spec.attr("n"), kk, m, 1, 1, 1, m, 1
        row[L_HASW] = 1.0
    elif spec.op == "conv2d_transpose":
        # As the equivalent direct conv over the outputs: each output reduces over in/groups
        # channels and the taps of the window that land on it (kernel / stride per axis), reading
        # the whole input map once.
        n, c, h, w = s
        _, k, p, q = spec.output_shape()
        g = spec.attr("groups")
        taps = max(1, -(-spec.attr("kernel") // spec.attr("stride")))
        row[[L_N, L_G, L_K, L_C, L_P, L_Q, L_R, L_S, L_H, L_W]] = n, g, k // g, c // g, p, q, taps, taps, h, w
        row[L_HASW] = 1.0
    elif spec.op == "resize2d":
        # A stream: every output element computed from its taps of the input map, read once.
        n, c, h, w = s
        _, _, p, q = spec.output_shape()
        row[L_KIND] = KIND_ELEMENTWISE
        ops = {"nearest": 1.0, "linear": 8.0, "cubic": 32.0}[spec.attr("method")]
        row[[L_N, L_G, L_K, L_C, L_P, L_Q, L_R, L_S, L_H, L_W]] = n, c, 1, 1, p, q, ops, 1, h, w
    elif spec.op in _ELEMENTWISE_OPS or spec.op == "lrn":
        # Any rank 2-4 as (N, C, H, W): (rows, columns) -> (1, rows, columns, 1), (a, b, c) -> (1, a, b, c).
        n, c, h, w = s if len(s) == 4 else (1, *s) if len(s) == 3 else (1, s[0], s[1], 1)
        ops = float(spec.attr("size") + 4) if spec.op == "lrn" else _ELEMENTWISE_OPS[spec.op]
        row[L_KIND] = KIND_ELEMENTWISE
        row[[L_N, L_G, L_K, L_C, L_P, L_Q, L_R, L_S, L_H, L_W]] = n, c, 1, 1, h, w, ops, 1, h, w
        row[L_NIN] = 2.0 if spec.op in ("add", "mul") else 1.0
    else:  # pragma: no cover - every KernelSpec op is handled above
        raise CodesignError(f"the accelerator model has no mapping for op {spec.op!r}")
    return row


def _span(n, stride, taps, dilation):
    """How many distinct input indices ``stride * o + dilation * t`` (o < n, t < taps) reads."""
    g = math.gcd(int(stride), int(dilation))
    return n * taps - max(0, taps - stride // g) * max(0, n - dilation // g)


def _footprint(n_out, stride, taps, dilation, size, pad) -> float:
    """Input rows (or columns) a layer reads from memory: the distinct indices its windows touch,
    without the zero padding (made on chip, never fetched) and without rows a stride skips."""
    n_out, stride, taps, dilation = int(n_out), int(stride), int(taps), int(dilation)
    reach = (n_out - 1) * stride + (taps - 1) * dilation + 1
    pad_read = min(pad, reach) + max(0, min(pad, reach - pad - size))
    return float(max(1, min(size, _span(n_out, stride, taps, dilation) - pad_read)))


def encode_layers(specs) -> np.ndarray:
    specs = list(specs)
    out = np.zeros((len(specs), LAYER_FIELDS))
    for i, s in enumerate(specs):
        out[i] = encode_layer(s)
    return out


def encode_config(cfg: AcceleratorConfig) -> np.ndarray:
    """The float64 row of one accelerator config."""
    if not isinstance(cfg, AcceleratorConfig):
        raise CodesignError(f"a config is an AcceleratorConfig, got {type(cfg).__name__}")
    e = cfg.energy
    row = np.zeros(CONFIG_FIELDS)
    row[C_ROWS], row[C_COLS], row[C_RF], row[C_GLB] = cfg.pe_rows, cfg.pe_cols, cfg.rf_words, cfg.glb_words
    # bytes per cycle of the DRAM link: GB/s / GHz
    row[C_BPC] = cfg.dram_bandwidth_gbs / (cfg.clock_mhz * 1e-3)
    row[C_CLOCK] = cfg.clock_mhz * 1e6
    row[C_DATAFLOW] = DATAFLOWS.index(cfg.dataflow)
    # DRAM words move word_bits each: the link's bytes per cycle are converted to words per cycle
    row[C_BPC] /= cfg.word_bytes
    row[C_E_MAC], row[C_E_RF_R], row[C_E_RF_W], row[C_E_HOP] = e["mac_pj"], e["rf_read_pj"], e["rf_write_pj"], e["noc_hop_pj"]
    row[C_E_GLB_R], row[C_E_GLB_W] = e["glb_read_pj"], e["glb_write_pj"]
    row[C_E_DRAM_R], row[C_E_DRAM_W] = e["dram_read_pj"], e["dram_write_pj"]
    row[C_AREA] = cfg.area_mm2()
    row[C_SYSTOLIC] = 1.0 if cfg.interconnect == "systolic" else 0.0
    return row


def encode_configs(cfgs) -> np.ndarray:
    cfgs = list(cfgs)
    out = np.zeros((len(cfgs), CONFIG_FIELDS))
    for i, c in enumerate(cfgs):
        out[i] = encode_config(c)
    return out


def _eval_pair(lay, cfg, out):
    """Evaluate one layer row on one config row into ``out`` (RESULT_FIELDS floats)."""
    for i in range(out.shape[0]):
        out[i] = 0.0
    N, G, K, C = lay[1], lay[2], lay[3], lay[4]
    P, Q, Rk, Sk = lay[5], lay[6], lay[7], lay[8]
    U, Dl, H, W = lay[9], lay[10], lay[11], lay[12]
    nin, hasw = lay[13], lay[14]
    rows, cols, rf, glb = cfg[0], cfg[1], cfg[2], cfg[3]
    wpc, clock, df = cfg[4], cfg[5], int(cfg[6])
    e_mac, e_rfr, e_rfw, e_hop = cfg[7], cfg[8], cfg[9], cfg[10]
    e_gr, e_gw, e_dr, e_dw = cfg[11], cfg[12], cfg[13], cfg[14]
    out[16] = cfg[15]
    inf = math.inf
    pes = rows * cols

    if lay[0] == 1.0:
        # Elementwise: stream nin operands in and one result out, Rk ops per element.
        elems = N * G * P * Q
        macs = elems * Rk
        if glb < nin + 1.0 or rf < 1.0:
            out[1] = 2.0 if glb < nin + 1.0 else 1.0
            for i in (2, 3, 4, 17):
                out[i] = inf
            return
        dram = elems * (nin + 1.0)
        comp = math.ceil(elems / pes) * Rk
        dcyc = dram / wpc
        cyc = max(comp, dcyc)
        e_d = elems * (nin * e_dr + e_dw)
        e_g = elems * (nin * e_gr + e_gw)
        e_n = elems * (nin + 1.0) * e_hop
        e_m = macs * e_mac
        tot = (e_d + e_g + e_n + e_m) * 1e-9
        out[0] = 1.0
        out[2] = cyc
        out[3] = cyc / clock * 1e3
        out[4] = tot
        out[5], out[6], out[7], out[8], out[9] = e_m * 1e-9, 0.0, e_n * 1e-9, e_g * 1e-9, e_d * 1e-9
        out[10] = macs / (cyc * pes)
        out[11] = macs
        out[12] = dram
        out[13] = 2.0 * dram
        out[14] = dram
        out[17] = tot * cyc
        out[18], out[19] = comp, dcyc
        out[20] = 3.0
        return

    macs = N * G * K * C * P * Q * Rk * Sk
    sizeW = G * K * C * Rk * Sk * hasw
    sizeI = N * G * C * H * W
    sizeO = N * G * K * P * Q
    out[11] = macs

    # ---- 1. DRAM level: GLB tile and loop order with the fewest DRAM words --------------------
    # input rows a tile of pt output rows reads: distinct indices of U * p + D * r (gaps skipped)
    ga, gb = U, Dl
    while gb > 0.0:
        ga, gb = gb, ga % gb
    dup_taps, dup_rows = max(0.0, Rk - U / ga), Dl / ga
    # those indices include padding rows (never fetched): scale them to the layer's fetched rows H
    unpad = H / max(1.0, P * Rk - dup_taps * max(0.0, P - dup_rows))
    best_dram = inf
    bo, bk, bc, bn, bp = 0.0, 0.0, 0.0, 0.0, 0.0
    aW, aI, aO = 1.0, 1.0, 1.0
    kt = K
    while True:
        nK = math.ceil(K / kt)
        ct = C
        while True:
            nC = math.ceil(C / ct)
            wt = kt * ct * Rk * Sk * hasw
            # (n_t, p_t): whole images halved first, then output rows of one image
            nt = N
            pt = P
            while True:
                rows_t = min(H, (pt * Rk - dup_taps * max(0.0, pt - dup_rows)) * unpad)
                need = wt + nt * ct * rows_t * W + nt * kt * pt * Q
                if need <= glb:
                    nNP = math.ceil(N / nt) * math.ceil(P / pt)
                    hf = max(1.0, math.ceil(P / pt) * rows_t / H)
                    iw = sizeI * hf
                    o_ns = sizeO * (2.0 * nC - 1.0)
                    for order in range(3):
                        if order == 0:
                            wr, ir, ow = sizeW, iw * nK, o_ns
                        elif order == 1:
                            wr, ir, ow = sizeW * nNP, iw, o_ns
                        else:
                            wr, ir, ow = sizeW * nNP, iw * nK, sizeO
                        words = wr + ir + ow
                        if words < best_dram:
                            best_dram = words
                            bo, bk, bc, bn, bp = order, kt, ct, nt, pt
                            aW = wr / sizeW if sizeW > 0 else 1.0
                            aI = ir / sizeI
                            aO = (ow / sizeO + 1.0) / 2.0
                if nt > 1.0:
                    nt = math.ceil(nt / 2.0)
                elif pt > 1.0:
                    pt = math.ceil(pt / 2.0)
                else:
                    break
            if ct == 1.0:
                break
            ct = math.ceil(ct / 2.0)
        if kt == 1.0:
            break
        kt = math.ceil(kt / 2.0)
    if best_dram == inf:
        out[1] = 2.0
        for i in (2, 3, 4, 17):
            out[i] = inf
        return
    dcyc = best_dram / wpc
    uW = N * P * Q
    uO = C * Rk * Sk
    uI = macs / sizeI

    # ---- 2. array and RF level per dataflow ---------------------------------------------------
    best_edp = inf
    found = False
    nsel = 1 if df == 0 else 2
    for sel in range(nsel):
        if df == 1 and sel == 0 and cfg[16] > 0.5:
            continue  # a systolic array cannot broadcast one weight to every PE: no os (a)
        for ai in range(16):
            pa = 2.0 ** ai
            if df == 0 and ai > 0:
                break
            for bi in range(16):
                pb = 2.0 ** bi
                if df != 2 and bi > 0:
                    break
                # defaults: no reuse below the GLB
                cW = cI = cO = dW = dI = dO = 1.0
                fill = 0.0
                if df == 0:
                    # ws: rows <- C*R*S, cols <- K
                    red = C * Rk * Sk
                    ur, uc = min(red, rows), min(K, cols)
                    if rf < 1.0:
                        continue
                    frag = math.ceil(red / ur) * ur / red * math.ceil(K / uc) * uc / K
                    used = ur * uc
                    cI, cO = uc, ur
                    dW = uW / aW
                    # every fold loads its weights (rows cycles), skews the inputs in (rows - 1) and
                    # drains the last partial sums (cols - 1), as SCALE-Sim's weight-stationary array
                    fill = G * math.ceil(red / ur) * math.ceil(K / uc) * (2.0 * rows + cols - 2.0)
                elif df == 1:
                    kr = pa
                    if sel == 0:
                        # os (a): rows <- P, cols <- Q, k_rf output channels per PE
                        if kr > K and ai > 0:
                            break
                        ur, uc = min(P, rows), min(Q, cols)
                        frag = math.ceil(P / ur) * ur / P * math.ceil(Q / uc) * uc / Q
                        used = ur * uc
                        cW = used
                        cI = min(max(1.0, Rk * Sk / (U * U)), used)
                    else:
                        # os (b): rows <- K, cols <- N*P*Q
                        npq = N * P * Q
                        ur, uc = min(K, rows), min(npq, cols)
                        if kr > math.ceil(K / ur) and ai > 0:
                            break
                        frag = math.ceil(K / ur) * ur / K * math.ceil(npq / uc) * uc / npq
                        used = ur * uc
                        cW = uc
                        cI = ur
                        # a systolic pass: inputs along rows and weights down columns are skewed in
                        # and the outputs drained across the array (rows + cols - 2 cycles a pass), as
                        # SCALE-Sim's output-stationary array; (a) broadcasts its weights, no skew
                        fill = G * math.ceil(math.ceil(K / ur) / kr) * math.ceil(npq / uc) * (rows + cols - 2.0)
                    if 2.0 * kr + 1.0 > rf:
                        if ai == 0:
                            continue
                        break
                    dI = kr
                    dO = uO / aO
                else:
                    # rs: rows <- R (x e_v over C or K), cols <- P (x e_h over K or C)
                    p, q = pa, pb
                    if (p > K and ai > 0) or (q > C and bi > 0):
                        break
                    if p * q * Sk + q * Sk + p > rf:
                        break
                    rr = min(Rk, rows)
                    pu = min(P, cols)
                    xv = C if sel == 0 else K
                    xh = K if sel == 0 else C
                    ev = max(1.0, min(math.floor(rows / rr), xv))
                    eh = max(1.0, min(math.floor(cols / pu), xh))
                    frag = (math.ceil(Rk / rr) * rr / Rk * math.ceil(xv / ev) * ev / xv
                            * math.ceil(P / pu) * pu / P * math.ceil(xh / eh) * eh / xh)
                    used = rr * ev * pu * eh
                    cW = pu
                    dW = Q
                    cI = max(1.0, rr / U) * (ev if sel == 1 else 1.0) * (eh if sel == 0 else 1.0)
                    dI = p * max(1.0, Sk / U)
                    cO = rr * (ev if sel == 0 else 1.0) * (eh if sel == 1 else 1.0)
                    dO = q * Sk
                found = True
                comp = macs / used * frag + fill
                cyc = max(comp, dcyc)
                # Eyeriss framework counts; reuse factors clamped so a*b*c*d never exceeds the uses
                # weights
                dram_r = 0.0
                glb_r = 0.0
                hops = 0.0
                rf_r = 0.0
                rf_w = 0.0
                glb_w = 0.0
                if sizeW > 0:
                    c_ = min(cW, max(1.0, uW / aW))
                    d_ = min(dW, max(1.0, uW / (aW * c_)))
                    b_ = max(1.0, uW / (aW * c_ * d_))
                    dram_r += aW * sizeW
                    # what DRAM sends is written into the GLB once (ZigZag, Timeloop and Accelergy
                    # count this fill; the Eyeriss framework's a*b*c*d counts reads only)
                    glb_w += aW * sizeW
                    glb_r += aW * b_ * sizeW
                    hops += aW * b_ * c_ * sizeW
                    rf_r += aW * b_ * c_ * d_ * sizeW
                # inputs
                c_ = min(cI, max(1.0, uI / aI))
                d_ = min(dI, max(1.0, uI / (aI * c_)))
                b_ = max(1.0, uI / (aI * c_ * d_))
                dram_r += aI * sizeI
                glb_w += aI * sizeI  # the GLB fill, as for weights
                glb_r += aI * b_ * sizeI
                hops += aI * b_ * c_ * sizeI
                rf_r += aI * b_ * c_ * d_ * sizeI
                # partial sums
                c_ = min(cO, max(1.0, uO / aO))
                d_ = min(dO, max(1.0, uO / (aO * c_)))
                b_ = max(1.0, uO / (aO * c_ * d_))
                dram_w = aO * sizeO
                dram_r += (aO - 1.0) * sizeO
                glb_r += aO * (b_ - 1.0) * sizeO
                glb_w += aO * (b_ - 1.0) * sizeO
                hops += aO * b_ * (c_ - 1.0) * sizeO
                rf_r += aO * b_ * c_ * (d_ - 1.0) * sizeO
                rf_w += aO * b_ * c_ * (d_ - 1.0) * sizeO
                e_m = macs * e_mac
                e_r = rf_r * e_rfr + rf_w * e_rfw
                e_n = hops * e_hop
                e_g = glb_r * e_gr + glb_w * e_gw
                e_d = dram_r * e_dr + dram_w * e_dw
                tot = (e_m + e_r + e_n + e_g + e_d) * 1e-9
                edp = tot * cyc
                if edp < best_edp:
                    best_edp = edp
                    out[2] = cyc
                    out[4] = tot
                    out[5], out[6], out[7], out[8], out[9] = e_m * 1e-9, e_r * 1e-9, e_n * 1e-9, e_g * 1e-9, e_d * 1e-9
                    out[10] = macs / (cyc * pes)
                    out[12] = dram_r + dram_w
                    out[13] = glb_r + glb_w
                    out[14] = hops
                    out[15] = rf_r + rf_w
                    out[17] = edp
                    out[18] = comp
                    out[28] = fill
                    out[25] = sel
                    out[26] = pa
                    out[27] = pb
    if not found:
        out[1] = 1.0
        for i in (2, 3, 4, 17):
            out[i] = inf
        return
    out[0] = 1.0
    out[3] = out[2] / clock * 1e3
    out[19] = dcyc
    out[20], out[21], out[22], out[23], out[24] = bo, bk, bc, bn, bp


def _eval_batch(layers, configs, li, ci, out):
    for j in range(li.shape[0]):
        _eval_pair_nb(layers[li[j]], configs[ci[j]], out[j])


def _eval_batch_parallel(layers, configs, li, ci, out):
    for j in _prange(li.shape[0]):
        _eval_pair_nb(layers[li[j]], configs[ci[j]], out[j])


# Bound on first use by _compiled(): numba resolves these globals when it compiles the batch loops.
_eval_pair_nb = None
_prange = range
_jit: dict = {}
_jit_lock = threading.Lock()


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _compiled():
    """The numba-compiled batch evaluators (compiled on first use, cached on disk by numba).

    numba's disk cache goes to the user's own ``NUMBA_CACHE_DIR`` where one is set, else to
    ``codesign.paths.cache_dir("numba")``; never beside this file (numba's default is the
    ``__pycache__`` of the installed package, which outlives ``pip uninstall``). Where that
    directory cannot be written the evaluators are compiled without a disk cache.
    """
    global _eval_pair_nb, _prange
    with _jit_lock:
        if _jit:
            return _jit
        try:
            import numba
        except ImportError as exc:  # numba is a dependency; say so plainly where it is missing
            raise CodesignError("the accelerator model's batch evaluation needs numba: pip install numba") from exc
        users_dir = numba.config.CACHE_DIR  # from NUMBA_CACHE_DIR or numba's config file
        target = users_dir or str(cache_dir("numba"))
        cache = _writable_dir(target)
        if not cache:
            var = "NUMBA_CACHE_DIR" if users_dir else "CODESIGN_CACHE_DIR"
            warnings.warn(f"numba's cache directory {target} cannot be written; the accelerator model is "
                          f"compiled without a disk cache (set {var} to a writable directory)",
                          RuntimeWarning, stacklevel=3)
        # numba picks a function's cache directory when it is decorated; set ours for these three
        # decorations only, so that other numba code in the process keeps numba's own default.
        numba.config.CACHE_DIR = target
        try:
            _eval_pair_nb = numba.njit(cache=cache, nogil=True)(_eval_pair)
            _prange = numba.prange
            serial = numba.njit(cache=cache, nogil=True)(_eval_batch)
            parallel = numba.njit(cache=cache, nogil=True, parallel=True)(_eval_batch_parallel)
        finally:
            numba.config.CACHE_DIR = users_dir
        _jit.update(serial=serial, parallel=parallel)
    return _jit


def evaluate_rows(layers: np.ndarray, configs: np.ndarray, layer_index=None, config_index=None,
                  jit: bool = True, parallel: bool = False) -> np.ndarray:
    """Evaluate (layer, config) pairs on encoded rows; returns [pairs, RESULT_FIELDS] float64.

    Args:
        layers: [L, LAYER_FIELDS] from ``encode_layers``.
        configs: [C, CONFIG_FIELDS] from ``encode_configs``.
        layer_index, config_index: int arrays of equal length naming the pairs; omitted, every
            layer is paired with every config (row-major: pair ``l * C + c``).
        jit: numba (default) or the plain-Python reference of the same code.
        parallel: spread the pairs over the CPU cores (numba's threading layer).
    """
    layers = np.ascontiguousarray(layers, dtype=np.float64)
    configs = np.ascontiguousarray(configs, dtype=np.float64)
    if layers.ndim != 2 or layers.shape[1] != LAYER_FIELDS:
        raise CodesignError(f"layers must be [L, {LAYER_FIELDS}] rows from encode_layers, got {layers.shape}")
    if configs.ndim != 2 or configs.shape[1] != CONFIG_FIELDS:
        raise CodesignError(f"configs must be [C, {CONFIG_FIELDS}] rows from encode_configs, got {configs.shape}")
    if (layer_index is None) != (config_index is None):
        raise CodesignError("give both layer_index and config_index, or neither")
    if layer_index is None:
        li = np.repeat(np.arange(len(layers), dtype=np.int64), len(configs))
        ci = np.tile(np.arange(len(configs), dtype=np.int64), len(layers))
    else:
        li = np.ascontiguousarray(layer_index, dtype=np.int64)
        ci = np.ascontiguousarray(config_index, dtype=np.int64)
        if li.shape != ci.shape or li.ndim != 1:
            raise CodesignError("layer_index and config_index must be 1-D arrays of equal length")
        if len(li) and (li.min() < 0 or li.max() >= len(layers) or ci.min() < 0 or ci.max() >= len(configs)):
            raise CodesignError("layer_index/config_index out of range of the layer/config rows")
    out = np.zeros((len(li), RESULT_FIELDS))
    if jit:
        fns = _compiled()
        (fns["parallel"] if parallel else fns["serial"])(layers, configs, li, ci, out)
    else:
        for j in range(len(li)):
            _eval_pair(layers[li[j]], configs[ci[j]], out[j])
    return out
