"""Few-shot latency transfer to a device that cannot be profiled kernel by kernel.

A phone, an FPGA or an accelerator in simulation may not run TVM's profiler, but a user can time
a handful of whole networks on it. This module turns those timings into a cost model of the new
device using what codesign knows about many other devices:

- network features computable for any network: FLOPs, bytes, parameters, kernel counts by
  family, depth, widths (``network_features``), and the network's modelled latency on a fixed
  *basis* of accelerator configs (``BASIS``; the hw_models mapper prices every layer of every
  network on them in milliseconds, so a family of different devices costs nothing to consult);
- a meta-learned prior over how devices map these features to latency, fitted across *source*
  devices: a second family of accelerator configs (``SOURCE_FAMILY``) evaluated on a sample of
  the space's networks, plus any measured devices of a bank (``Bank``, SQLite);
- the new device's latencies on a small fixed *reference set* of networks (``reference_genotypes``,
  written as ONNX by ``codesign calibrate --reference-set``), which play HELP's hardware
  embedding: they condition the prior on the new device.

The model (``codesign calibrate --method meta``, the default) is hierarchical Bayesian linear
regression in log latency. Each source device d has weights w_d (log latency ~ standardised
features @ w_d + b_d, fitted by ridge on all its networks); the prior is w ~ N(mean of w_d,
covariance of w_d + a shrinkage term), and a new device's weights are the posterior mean given
its N reference rows (noise variance and shrinkage chosen by leave-one-source-device-out). The
reference latencies are the device's embedding: the prior's mean and covariance weigh every
source by how well its weights explain them (``local_prior``), so that a CPU-like target leans on
CPU-like sources; a temperature chosen with the other hyperparameters sets how sharply. This
is HELP's recipe (Lee et al., NeurIPS 2021: a predictor meta-trained across devices and adapted
to a new one through a hardware embedding measured on reference networks) with a closed-form
adaptation in place of MAML's gradient steps: with 5-20 rows a Gaussian posterior is exact,
cannot overfit the way a fine-tuned network can, and needs no inner learning rate.
benchmarks/fewshot.py measures the choice, leave one device out, against a HELP-style network
(an MLP on network features and the reference-latency embedding, meta-trained across the
sources), a FLOPs proxy, ridge on network features and per-family calibration.

Artifacts (the fitted ``fewshot`` cost model) are JSON with a format version; the bank is SQLite
with a schema version; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CodesignError
from ..kernelspec import KernelSpec, kernel_bytes, kernel_flops
from .features import FAMILIES, _weights, family
from .models import CostModel, register_cost_model

FORMAT_VERSION = 1
BANK_SCHEMA_VERSION = 1
REFERENCE_FORMAT_VERSION = 1
REFERENCE_SEED = 20210
REFERENCE_SIZE = 20
# The fewest reference rows a method adapts from: the fewest benchmarks/fewshot.py evaluates.
MIN_ROWS = {"meta": 5}

# The default space of the reference set: FBNet's layout at CIFAR resolution.
DEFAULT_SPACE = {"name": "mobilenet", "config": "fbnet", "input_shape": [1, 3, 32, 32], "num_classes": 10}


# --- networks -------------------------------------------------------------------------------
def create_reference_space(space: dict | None = None):
    """The search space of a reference set description (``DEFAULT_SPACE`` by default)."""
    from ..spaces import create_space

    space = dict(DEFAULT_SPACE if space is None else space)
    name = space.pop("name")
    if "input_shape" in space:
        space["input_shape"] = tuple(space["input_shape"])
    return create_space(name, **space)


def random_genotypes(space, n: int, seed: int, exclude: set[str] | None = None) -> list[str]:
    """``n`` distinct genotypes, every layer's option drawn uniformly (seeded)."""
    rng = random.Random(seed)
    exclude = set(exclude or ())
    out: list[str] = []
    seen = set(exclude)
    decisions = space.decisions()
    tries = 0
    while len(out) < n:
        g = space.format([rng.randrange(len(d.options)) for d in decisions])
        tries += 1
        if g not in seen:
            seen.add(g)
            out.append(g)
        elif tries > 100 * n:
            raise CodesignError(f"the space has fewer than {n} distinct networks to draw")
    return out


def reference_genotypes(space=None, n: int = REFERENCE_SIZE, seed: int = REFERENCE_SEED) -> list[str]:
    """The fixed, ordered reference set: the networks a user times on a new device."""
    return random_genotypes(space if space is not None else create_reference_space(), n, seed)


def network_signature(specs: list[KernelSpec]) -> str:
    """A short hash of a network's kernel list (order matters): identifies a reference network
    whatever file or genotype string it came from."""
    return hashlib.sha256("\n".join(s.key() for s in specs).encode()).hexdigest()[:16]


FEATURE_NAMES = ("log_flops", "log_bytes", "log_params", "log_kernels", "log_convs", "log_max_width",
                 "log_mean_width", "log_flops_per_kernel", "log_intensity") + tuple(
    f"log_{f}_flops" for f in FAMILIES) + tuple(f"log_{f}_kernels" for f in FAMILIES)


def network_features(specs: list[KernelSpec]) -> np.ndarray:
    """One row of ``FEATURE_NAMES``: totals and counts of a network (logs of 1 + x)."""
    if not specs:
        raise CodesignError("a network without kernels has no features")
    flops = np.array([kernel_flops(s) for s in specs])
    nbytes = np.array([kernel_bytes(s) for s in specs])
    fams = [family(s) for s in specs]
    widths = [s.output_shape()[1] for s in specs if len(s.output_shape()) >= 2]
    convs = sum(1 for s in specs if s.op == "conv2d")
    fam_flops = [flops[[f == name for f in fams]].sum() for name in FAMILIES]
    fam_count = [sum(1 for f in fams if f == name) for name in FAMILIES]
    raw = [flops.sum(), nbytes.sum(), sum(_weights(s) for s in specs), len(specs), convs,
           max(widths or [1]), float(np.mean(widths or [1])), flops.sum() / len(specs),
           flops.sum() / max(nbytes.sum(), 1.0)] + fam_flops + fam_count
    return np.log1p(np.asarray(raw, dtype=np.float64))


# --- accelerator configs: the basis (features) and the source family (meta-training) ----------
def _accel(name: str, dataflow: str, rows: int, cols: int, rf: int, glb: int, bw: float, mhz: int):
    from ..hw_models import AcceleratorConfig

    return AcceleratorConfig(name=name, pe_rows=rows, pe_cols=cols, rf_words=rf, glb_kib=glb,
                             dram_bandwidth_gbs=bw, clock_mhz=mhz, dataflow=dataflow)


def basis_configs() -> list:
    """The accelerator configs whose modelled latencies are features of every network: the three
    dataflows at small, middle and large array sizes, memory-bound and compute-bound."""
    out = []
    for df in ("ws", "os", "rs"):
        for rows, cols, rf, glb, bw, mhz in ((4, 4, 32, 64, 1.0, 200), (12, 14, 128, 128, 4.0, 400),
                                             (32, 32, 64, 512, 25.0, 1000)):
            out.append(_accel(f"basis-{df}-{rows}x{cols}", df, rows, cols, rf, glb, bw, mhz))
    return out


def source_family(n: int = 36, seed: int = 7) -> list:
    """Accelerator configs drawn at random (seeded) over dataflow, array, buffers, bandwidth and
    clock: source devices for meta-training, distinct from the basis."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        df = ("ws", "os", "rs")[i % 3]
        rows = rng.choice((4, 6, 8, 12, 16, 24, 32))
        cols = rng.choice((4, 8, 14, 16, 32))
        out.append(_accel(f"source-{i}-{df}-{rows}x{cols}", df, rows, cols, rng.choice((16, 64, 256)),
                          rng.choice((32, 108, 256, 1024)), rng.choice((0.5, 2.0, 8.0, 32.0)),
                          rng.choice((100, 200, 500, 1000))))
    return out


def accel_latencies_ms(networks: list[list[KernelSpec]], configs: list) -> np.ndarray:
    """(networks, configs): each network's modelled latency on each config (layers in sequence;
    a layer that does not fit a config is costed there as ``mapped_ms`` says).

    Raises:
        CodesignError: a layer no config can map.
    """
    unique = list(dict.fromkeys(s for net in networks for s in net))
    grid = mapped_ms(unique, configs)
    index = {s: i for i, s in enumerate(unique)}
    out = np.zeros((len(networks), len(configs)))
    for n, net in enumerate(networks):
        for s in net:
            out[n] += grid[index[s]]
    return out


def mapped_ms(specs: list[KernelSpec], configs: list) -> np.ndarray:
    """(kernels, configs): each kernel's mapper latency on each config.

    A kernel that does not fit a config (a 16x16 patch embedding or global pool needs more register
    file than the smallest row-stationary basis config has) is costed there from the first config
    of the same dataflow it fits (else the first it fits): its latency there times the median
    ratio of the two configs' latencies over fixed probe layers (``_PROBES``). A kernel's figure
    therefore never depends on what else is costed with it.

    Raises:
        CodesignError: a kernel that fits no config.
    """
    from ..hw_models import evaluate_grid, mapper

    specs = list(specs)
    grid = evaluate_grid(specs, configs)[:, :, mapper.R["latency_ms"]] if specs else np.zeros((0, len(configs)))
    fits = np.isfinite(grid)
    if fits.all():
        return grid
    if not fits.any(axis=1).all():
        bad = specs[int(np.where(~fits.any(axis=1))[0][0])]
        raise CodesignError(f"kernel {bad.key()} cannot be mapped on any basis accelerator")
    ratio = _probe_ratios(configs)
    for r, j in zip(*np.where(~fits)):
        cands = [int(k) for k in np.where(fits[r])[0]]
        same = [k for k in cands if configs[k].dataflow == configs[j].dataflow]
        k = (same or cands)[0]
        grid[r, j] = grid[r, k] * ratio[j, k]
    return grid


# Layers every config of the basis and source family fits, at the sizes CNNs and the search spaces
# use: what one config's latency is against another's, for kernels that do not fit one of them.
_PROBES = tuple(
    spec
    for c, res in ((16, 32), (32, 16), (64, 8), (128, 4), (256, 8))
    for spec in (
        KernelSpec.make("conv2d", (1, c, res, res), out_channels=c, kernel=3),
        KernelSpec.make("conv2d", (1, c, res, res), out_channels=2 * c, kernel=1),
        KernelSpec.make("conv2d", (1, c, res, res), out_channels=c, kernel=3, groups=c),
        KernelSpec.make("max_pool2d", (1, c, res, res), kernel=3, stride=2, padding=1),
        KernelSpec.make("add", (1, c, res, res)),
        KernelSpec.make("dense", (1, c), out_features=4 * c),
    )
)
_RATIO_CACHE: dict[tuple, np.ndarray] = {}


def _probe_ratios(configs: list) -> np.ndarray:
    """(configs, configs): the median over the probes that fit both of latency on j / on k."""
    from ..hw_models import evaluate_grid, mapper

    key = tuple(repr(c) for c in configs)
    if key not in _RATIO_CACHE:
        lat = np.log(evaluate_grid(list(_PROBES), configs)[:, :, mapper.R["latency_ms"]])
        n = len(configs)
        ratio = np.ones((n, n))
        for j in range(n):
            for k in range(n):
                both = np.isfinite(lat[:, j]) & np.isfinite(lat[:, k])
                if both.any():
                    ratio[j, k] = float(np.exp(np.median(lat[both, j] - lat[both, k])))
        _RATIO_CACHE[key] = ratio
    return _RATIO_CACHE[key]


def design_matrix(networks: list[list[KernelSpec]]) -> np.ndarray:
    """Features of networks: ``network_features`` then log latency on every basis config."""
    feats = np.stack([network_features(k) for k in networks])
    basis = np.log(accel_latencies_ms(networks, basis_configs()))
    return np.hstack([feats, basis])


def design_names() -> list[str]:
    return list(FEATURE_NAMES) + [f"log_ms_{c.name}" for c in basis_configs()]


# --- the meta-learned prior --------------------------------------------------------------
def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    return mean, scale


def _ridge_weights(z: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """[intercept, weights] of ridge regression of y on standardised z (intercept unpenalised)."""
    a = np.hstack([np.ones((len(z), 1)), z])
    pen = lam * np.eye(a.shape[1])
    pen[0, 0] = 0.0
    return np.linalg.solve(a.T @ a + pen, a.T @ y)


def source_weights(z_by_device: list[np.ndarray], y_by_device: list[np.ndarray], lam: float = 1.0) -> np.ndarray:
    """(devices, 1 + features): each source device's ridge weights, intercept first."""
    return np.stack([_ridge_weights(z, y, lam) for z, y in zip(z_by_device, y_by_device)])


def local_prior(weights: np.ndarray, z: np.ndarray, y: np.ndarray, shrink: float,
                temperature: float) -> dict[str, np.ndarray]:
    """The Gaussian prior over a new device's weights, from the source devices' weights, each
    weighed by how well it explains the device's reference rows ``(z, y)`` up to its overall
    speed (its intercept refitted): the reference latencies act as the device's embedding, and
    sources that rank them alike count more. ``temperature`` inf weighs every source alike.

    Returns:
        dict with mean and cov (the intercept's variance left wide: the speed is the rows' to set).
    """
    if np.isfinite(temperature):
        resid = y[None, :] - weights[:, 1:] @ z.T  # (sources, rows), up to each source's intercept
        resid -= resid.mean(axis=1, keepdims=True)
        mse = (resid ** 2).mean(axis=1)
        logit = -(mse - mse.min()) / temperature
        pi = np.exp(logit)
        pi /= pi.sum()
    else:
        pi = np.full(len(weights), 1.0 / len(weights))
    mean = pi @ weights
    dev = weights - mean
    cov = (dev * pi[:, None]).T @ dev + shrink * np.eye(weights.shape[1])
    cov[0, 0] += 100.0
    return {"mean": mean, "cov": cov}


def posterior_weights(prior: dict[str, np.ndarray], z: np.ndarray, y: np.ndarray, noise: float) -> np.ndarray:
    """Posterior mean of a new device's weights given its rows (Gaussian prior and noise)."""
    a = np.hstack([np.ones((len(z), 1)), z])
    prec = np.linalg.inv(prior["cov"])
    lhs = prec + a.T @ a / noise
    rhs = prec @ prior["mean"] + a.T @ y / noise
    return np.linalg.solve(lhs, rhs)


def select_adaptation(weights: np.ndarray, z: np.ndarray, y: np.ndarray,
                      grid: tuple[tuple[float, float, float], ...]) -> tuple[float, float, float]:
    """The (shrink, temperature, noise) of ``grid`` whose adapted model predicts each of the
    device's rows best from the others (leave one row out), up to a common offset: a device's
    rows say how far it is from the sources, which the meta-trained values can only average.
    Ties keep the earlier entry of ``grid``."""
    a = np.hstack([np.ones((len(z), 1)), z])
    best, best_err = grid[0], np.inf
    for shrink, temperature, noise in grid:
        err = np.empty(len(y))
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            w = posterior_weights(local_prior(weights, z[keep], y[keep], shrink, temperature), z[keep], y[keep], noise)
            err[i] = a[i] @ w - y[i]
        score = float(((err - err.mean()) ** 2).mean())
        if score < best_err - 1e-12:
            best, best_err = (shrink, temperature, noise), score
    return best


# --- the bank of measured source devices ------------------------------------------------------
_BANK_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS networks (genotype TEXT PRIMARY KEY, role TEXT NOT NULL, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS latencies (
    genotype TEXT NOT NULL, device TEXT NOT NULL, latency_ms REAL NOT NULL, latency_std_ms REAL NOT NULL,
    settings TEXT NOT NULL, measured_at REAL NOT NULL, PRIMARY KEY (genotype, device));
CREATE TABLE IF NOT EXISTS kernels (genotype TEXT PRIMARY KEY, kernel_keys TEXT NOT NULL);
"""


class Bank:
    """Whole-network latencies of many devices on networks of one space (SQLite, schema-versioned).

    ``networks`` holds the reference set (role ``reference``, in its order) and a pool of other
    networks (role ``pool``); ``latencies`` one row per (network, device), so that building a
    bank is resumable and a benchmark can be rerun from it.
    """

    def __init__(self, path: str | Path, space: dict | None = None, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise CodesignError(f"no latency bank at {self.path}")
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=120)  # builders of one bank may run at once
            self.conn.executescript(_BANK_SCHEMA)
            meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise CodesignError(f"{self.path} is not a codesign latency bank ({exc})") from exc
        if not meta:
            if not create:
                raise CodesignError(f"{self.path} is not a codesign latency bank (no schema version)")
            self.conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema_version", str(BANK_SCHEMA_VERSION)),
                ("space", json.dumps(space if space is not None else DEFAULT_SPACE))])
            self.conn.commit()
            meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        version = meta.get("schema_version", "")
        if not version.isdigit() or int(version) > BANK_SCHEMA_VERSION or "space" not in meta:
            raise CodesignError(f"{self.path} has latency bank schema {version!r}; this codesign reads "
                                f"{BANK_SCHEMA_VERSION} (upgrade codesign, or it is not a bank)")
        self.space = json.loads(meta["space"])

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Bank:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_networks(self, genotypes: list[str], role: str) -> None:
        have = {g for (g,) in self.conn.execute("SELECT genotype FROM networks")}
        start = self.conn.execute("SELECT COUNT(*) FROM networks WHERE role = ?", (role,)).fetchone()[0]
        rows = [(g, role, start + i) for i, g in enumerate(g for g in genotypes if g not in have)]
        self.conn.executemany("INSERT INTO networks VALUES (?, ?, ?)", rows)
        self.conn.commit()

    def networks(self, role: str | None = None) -> list[str]:
        q = "SELECT genotype FROM networks" + (" WHERE role = ?" if role else "") + " ORDER BY role DESC, position"
        return [g for (g,) in self.conn.execute(q, (role,) if role else ())]

    def add(self, genotype: str, device: str, latency_ms: float, latency_std_ms: float, settings: dict,
            commit: bool = True) -> None:
        """Store (or replace) one network's latency on one device; ``commit=False`` leaves the
        commit to the caller, for many rows written together."""
        if not (math.isfinite(latency_ms) and latency_ms > 0):
            raise CodesignError(f"latency of {device} must be a finite positive number, got {latency_ms}")
        self.conn.execute("INSERT OR REPLACE INTO latencies VALUES (?, ?, ?, ?, ?, ?)",
                          (genotype, device, float(latency_ms), float(latency_std_ms), json.dumps(settings),
                           time.time()))
        if commit:
            self.conn.commit()

    def set_kernels(self, genotype: str, specs: list[KernelSpec]) -> None:
        self.conn.execute("INSERT OR REPLACE INTO kernels VALUES (?, ?)", (genotype, json.dumps([s.key() for s in specs])))
        self.conn.commit()

    def kernels(self) -> dict[str, list[KernelSpec]]:
        """The kernels of every network whose kernels are stored."""
        return {g: [KernelSpec.from_key(k) for k in json.loads(keys)]
                for g, keys in self.conn.execute("SELECT genotype, kernel_keys FROM kernels")}

    def devices(self) -> list[str]:
        return [d for (d,) in self.conn.execute("SELECT DISTINCT device FROM latencies ORDER BY device")]

    def latencies(self, device: str) -> dict[str, float]:
        return dict(self.conn.execute("SELECT genotype, latency_ms FROM latencies WHERE device = ?", (device,)))

    def settings(self, device: str) -> dict:
        row = self.conn.execute("SELECT settings FROM latencies WHERE device = ? LIMIT 1", (device,)).fetchone()
        return json.loads(row[0]) if row else {}


# --- meta-training and adaptation ------------------------------------------------------------
NOISE_GRID = (0.01, 0.1)
SHRINK_GRID = (0.01, 0.1)
# Temperatures down to 0.001 let a device lean on the one or two sources that explain its rows
# best: with 5 rows that ranks unseen networks far better than an average over sources (measured,
# leave one device out: mean Kendall tau 0.771 -> 0.840 at N = 5; untuned TVM 0.508 -> 0.724).
TEMPERATURE_GRID = (0.001, 0.003, 0.01, 0.1, float("inf"))
# Adaptation's own choice of (shrink, temperature, noise) for one device, by leave-one-row-out on
# its reference rows (``select_adaptation``); the meta-trained values are used below MIN_SELECT_ROWS.
ADAPT_GRID = tuple((s, t, n) for s in (0.003, 0.01, 0.1, 1.0) for t in (0.001, 0.003, 0.01, 0.1, float("inf"))
                   for n in (0.003, 0.01, 0.1, 1.0))
MIN_SELECT_ROWS = 8  # with 5 rows, leaving one out is too noisy (measured: ort-2t fell below FLOPs)
TUNING_SOURCES = 24  # held-out sources the hyperparameters are scored on (measured ones first)
TUNING_ROWS = 80  # of each held-out source's other networks


class Prior:
    """A meta-learned prior over devices: feature standardisation, every source device's weights,
    and the hyperparameters of adaptation (noise, shrinkage, temperature).

    Saved as JSON with a format version (``save``/``load``); ``codesign calibrate --method meta``
    adapts it to a new device from the reference rows (``adapt``).
    """

    def __init__(self, mean_x, scale_x, weights, noise: float, shrink: float, temperature: float,
                 sources: list[str], space: dict, reference: list[dict[str, str]]):
        self.mean_x, self.scale_x = np.asarray(mean_x, float), np.asarray(scale_x, float)
        self.weights = np.asarray(weights, float)  # (sources, 1 + features)
        self.noise, self.shrink, self.temperature = float(noise), float(shrink), float(temperature)
        self.sources = list(sources)
        self.space = dict(space)
        self.reference = [dict(r) for r in reference]  # the reference set in order: genotype, signature
        self.chosen: dict[str, float] | None = None  # the last adaptation's hyperparameters

    def z(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_x) / self.scale_x

    def adapt(self, x: np.ndarray, latency_ms: np.ndarray, select: bool = True) -> np.ndarray:
        """Posterior weights [intercept, w] of a device measured on rows ``x`` (design matrix).

        With ``select`` and at least ``MIN_SELECT_ROWS`` rows, the adaptation's shrinkage,
        temperature and noise are the device's own (``select_adaptation``; ``self.chosen`` says
        which), else the meta-trained ones."""
        z, y = self.z(x), np.log(latency_ms)
        shrink, temperature, noise = (self.shrink, self.temperature, self.noise)
        if select and len(y) >= MIN_SELECT_ROWS:
            shrink, temperature, noise = select_adaptation(self.weights, z, y,
                                                           ((self.shrink, self.temperature, self.noise),) + ADAPT_GRID)
        self.chosen = {"shrink": shrink, "temperature": temperature, "noise": noise}
        return posterior_weights(local_prior(self.weights, z, y, shrink, temperature), z, y, noise)

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "kind": "fewshot-prior", "features": design_names(),
                "basis": [c.to_dict() for c in basis_configs()], "space": self.space, "sources": self.sources,
                "reference": self.reference, "noise": self.noise, "shrink": self.shrink,
                "temperature": self.temperature if np.isfinite(self.temperature) else "inf",
                "mean_x": self.mean_x.tolist(), "scale_x": self.scale_x.tolist(), "weights": self.weights.tolist()}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Prior:
        """Raises CodesignError: missing, foreign, newer or damaged files, or a prior over other
        features or basis accelerators than this codesign computes."""
        path = Path(path)
        if not path.is_file():
            raise CodesignError(f"no few-shot prior at {path}")
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CodesignError(f"{path} is not a few-shot prior ({exc})") from exc
        if not isinstance(d, dict) or d.get("kind") != "fewshot-prior" or not isinstance(d.get("format_version"), int):
            raise CodesignError(f"{path} is not a few-shot prior (no kind fewshot-prior and format_version)")
        if d["format_version"] > FORMAT_VERSION:
            raise CodesignError(f"{path} has format version {d['format_version']}, newer than this codesign reads "
                                f"({FORMAT_VERSION}); upgrade codesign")
        if d.get("features") != design_names() or d.get("basis") != [c.to_dict() for c in basis_configs()]:
            raise CodesignError(f"{path} was meta-trained on other features or basis accelerators than this "
                                "codesign computes; meta-train it again (`codesign calibrate --bank`)")
        try:
            p = cls(d["mean_x"], d["scale_x"], d["weights"], d["noise"], d["shrink"], float(d["temperature"]),
                    d["sources"], d["space"], d["reference"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CodesignError(f"{path} is damaged ({type(exc).__name__}: {exc})") from exc
        k = len(design_names())
        arrays_ok = (p.mean_x.shape == (k,) and p.scale_x.shape == (k,) and p.weights.ndim == 2
                     and p.weights.shape[1] == k + 1 and len(p.weights) == len(p.sources) >= 1
                     and (p.scale_x > 0).all() and p.noise > 0 and p.shrink > 0 and p.temperature > 0)
        finite = all(np.isfinite(a).all() for a in (p.mean_x, p.scale_x, p.weights))
        if not (arrays_ok and finite):
            raise CodesignError(f"{path} is damaged: its arrays have the wrong shapes or non-finite values")
        return p


def prior_source_weights(prior: Prior, names: list[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Source devices of a saved prior as (intercept, weights on the raw design matrix), for
    ``meta_train``'s ``extra``: ``names`` of its sources (default all)."""
    out = {}
    for name, w in zip(prior.sources, prior.weights):
        if names is None or name in names:
            raw = w[1:] / prior.scale_x
            out[name] = (float(w[0] - raw @ prior.mean_x), raw)
    return out


def meta_train(sources: dict[str, tuple[np.ndarray, np.ndarray, int]], reference: list[dict[str, str]],
               space: dict | None = None, shots: tuple[int, ...] = (5, 10),
               extra: dict[str, tuple[float, np.ndarray]] | None = None) -> Prior:
    """Meta-train the prior on source devices.

    Args:
        sources: device name -> (design matrix of its networks, latency_ms, r): the first r rows
            are the first r reference networks in their order, the rest other networks.
        reference: the reference set (genotype and signature of each), kept in the prior.
        shots: the N the noise and shrinkage are chosen for (leave-one-source-out, mean Kendall
            tau of the adapted model on each held-out source's other networks).
        extra: devices known only by a fitted model (``prior_source_weights`` of another prior:
            name -> (intercept, weights on the raw design matrix)); they join the pool of source
            weights, and are not held out in the choice of hyperparameters (no networks of theirs
            are here).

    Raises:
        CodesignError: fewer than 3 source devices.
    """
    from scipy.stats import kendalltau

    names = sorted(sources)
    if len(names) < 3:
        raise CodesignError(f"meta-training needs at least 3 source devices, got {len(names)}")
    allx = np.vstack([sources[n][0] for n in names])
    mean_x, scale_x = _standardise(allx)
    zs = {n: (sources[n][0] - mean_x) / scale_x for n in names}
    ys = {n: np.log(sources[n][1]) for n in names}
    weights = {n: _ridge_weights(zs[n], ys[n], 1.0) for n in names}
    for n, (b, raw) in (extra or {}).items():  # the same linear function in this standardisation
        if n in weights:
            raise CodesignError(f"source {n!r} is both measured here and given as a fitted model")
        weights[n] = np.concatenate([[b + raw @ mean_x], raw * scale_x])
    names_measured, names = names, sorted(weights)
    # Score on the measured sources and an even spread of the modelled family (names sort so).
    measured = [n for n in names_measured if not n.startswith("source-")]
    family = [n for n in names_measured if n.startswith("source-")]
    step = max(1, len(family) // max(1, TUNING_SOURCES - len(measured)))
    held_out = measured + family[::step][: max(0, TUNING_SOURCES - len(measured))]
    best = None
    for shrink in SHRINK_GRID:
        for temperature in TEMPERATURE_GRID:
            for noise in NOISE_GRID:
                # leave one source out: the others' weights, adapted on the held-out one's reference rows
                taus = []
                for held in held_out:
                    z, y, r = zs[held], ys[held], sources[held][2]
                    if len(y) <= r + 2:
                        continue
                    test = slice(r, r + TUNING_ROWS)
                    rest = np.stack([weights[n] for n in names if n != held])
                    for n in shots:
                        if n > r:
                            continue
                        prior = local_prior(rest, z[:n], y[:n], shrink, temperature)
                        w = posterior_weights(prior, z[:n], y[:n], noise)
                        pred = np.hstack([np.ones((len(z), 1)), z])[test] @ w
                        taus.append(kendalltau(pred, y[test])[0])
                score = float(np.nanmean(taus)) if taus else 0.0
                if best is None or score > best[0]:
                    best = (score, shrink, temperature, noise)
    _, shrink, temperature, noise = best
    return Prior(mean_x, scale_x, np.stack([weights[n] for n in names]), noise, shrink, temperature, names,
                 space or DEFAULT_SPACE, reference)


def source_family_data(networks: list[list[KernelSpec]], x: np.ndarray,
                       reference_rows: int) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """The mapper's source family as meta-training devices on ``networks`` (design matrix ``x``,
    the first ``reference_rows`` of them the reference set)."""
    family_cfgs = source_family()
    lat = accel_latencies_ms(networks, family_cfgs)
    return {c.name: (x, lat[:, i], reference_rows) for i, c in enumerate(family_cfgs)}


class BankData:
    """A bank read for meta-training and evaluation: networks, their design matrix, latencies."""

    def __init__(self, bank: Bank):
        kernels = bank.kernels()
        self.reference = [g for g in bank.networks("reference") if g in kernels]
        if self.reference != bank.networks("reference"):
            raise CodesignError(f"{bank.path}: the kernels of some reference networks are missing")
        self.pool = [g for g in bank.networks("pool") if g in kernels]
        self.genotypes = self.reference + self.pool
        self.kernels = [kernels[g] for g in self.genotypes]
        self.x = design_matrix(self.kernels)
        self.row = {g: i for i, g in enumerate(self.genotypes)}
        self.space = bank.space
        self.latency = {d: bank.latencies(d) for d in bank.devices()}
        # The signatures a user's reference table is matched by: of the networks as codesign reads
        # them now, which a bank written by an earlier reader may not hold (its features are the
        # same; its kernel keys can differ, as dense layers gained ``weight_kn``).
        from ..graph import module_kernels

        sp = create_reference_space(self.space)
        self.entries = [{"genotype": g, "signature": network_signature(module_kernels(sp.build(g),
                                                                                         tuple(sp.input_shape)))}
                        for g in self.reference]

    def device_rows(self, device: str) -> tuple[np.ndarray, np.ndarray, int]:
        """(row indices, latency_ms, r) of a device: its leading run of reference networks in
        order (r of them), then every pool network it was measured on."""
        lat = self.latency[device]
        r = 0
        while r < len(self.reference) and self.reference[r] in lat:
            r += 1
        names = self.reference[:r] + [g for g in self.pool if g in lat]
        return np.array([self.row[g] for g in names], dtype=int), np.array([lat[g] for g in names]), r

    def sources(self, exclude: tuple[str, ...] = ()) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """Meta-training sources: every bank device but ``exclude``, plus the source family."""
        out = source_family_data(self.kernels, self.x, len(self.reference))
        for d in self.latency:
            if d in exclude:
                continue
            idx, y, r = self.device_rows(d)
            if r >= 5 and len(y) > r + 2:
                out[d] = (self.x[idx], y, r)
        return out


def read_bank(path: str | Path) -> BankData:
    """A bank's networks and latencies (CodesignError for a missing or foreign file)."""
    with Bank(path, create=False) as bank:
        return BankData(bank)


def meta_train_bank(data: BankData, exclude: tuple[str, ...] = ()) -> Prior:
    """Meta-train a prior on a bank's devices but ``exclude`` and the mapper's source family."""
    return meta_train(data.sources(exclude), data.entries, data.space)


def write_reference_set(folder: str | Path, reference: list[dict[str, str]], space: dict) -> dict[str, Any]:
    """Write the reference networks as ONNX (``ref-01.onnx``...), ``reference.json`` (format
    version, space, genotypes and kernel signatures in order) and ``table.csv`` (model, genotype
    and an empty latency_ms column to fill in) to ``folder``.

    Raises:
        CodesignError: a network whose kernels differ from the recorded signature (the space's
            definition changed since the prior was meta-trained).
    """
    import csv

    import torch

    from ..graph import export_onnx, onnx_kernels

    folder = Path(folder)
    sp = create_reference_space(space)
    protos = []
    for i, entry in enumerate(reference):
        torch.manual_seed(i)
        proto = export_onnx(sp.build(entry["genotype"]), tuple(sp.input_shape))
        if network_signature(onnx_kernels(proto)) != entry["signature"]:
            raise CodesignError(f"reference network {i + 1} no longer has the kernels the prior was meta-trained "
                                "on; the space's definition changed: meta-train the prior again")
        protos.append(proto)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, proto in enumerate(protos):
        name = f"ref-{i + 1:02d}.onnx"
        (folder / name).write_bytes(proto.SerializeToString())
        names.append(name)
    manifest = {"format_version": REFERENCE_FORMAT_VERSION, "kind": "fewshot-reference-set", "space": space,
                "min_rows": MIN_ROWS["meta"], "networks": [dict(e, model=n) for e, n in zip(reference, names)]}
    (folder / "reference.json").write_text(json.dumps(manifest, indent=1))
    with open(folder / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "genotype", "latency_ms"])
        for e, n in zip(reference, names):
            w.writerow([n, e["genotype"], ""])
    return {"folder": str(folder), "table": str(folder / "table.csv"), "networks": names,
            "min_rows": MIN_ROWS["meta"]}


# --- the calibrated few-shot model --------------------------------------------------------------
PRIOR_PATH = Path(__file__).parent / "data" / "fewshot-prior.json"


def _share_basis(x: np.ndarray, latency_ms: np.ndarray) -> int:
    """The basis config whose network latencies rank the rows most like the device does."""
    from scipy.stats import kendalltau

    k = len(FEATURE_NAMES)
    taus = [kendalltau(x[:, k + j], latency_ms)[0] for j in range(x.shape[1] - k)]
    taus = [t if np.isfinite(t) else -1.0 for t in taus]
    return int(np.argmax(taus))


@register_cost_model("fewshot", fittable=False)
class FewShotModel(CostModel):
    """A new device's latency from a meta-learned prior adapted to its reference rows (made by
    ``codesign calibrate --method meta``).

    It predicts whole networks (``predict_network``): log latency is a linear function of
    ``design_matrix`` features. Per kernel (``predict``, what a search sums over options) it is a
    scaled basis accelerator: cruder, additive, and right on average over the reference rows.
    """

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.reference: list[str] = []
        self.sources: list[str] = []
        self.adaptation: dict[str, Any] | None = None  # noise, shrink, temperature of the adaptation

    def fit(self, records, device=None, schedule=None):
        raise CodesignError("a few-shot model is made by `codesign calibrate --method meta`, not fitted")

    def _check_head(self, target, head):
        k = len(design_names())
        shapes = {"weights": (k + 1,), "mean_x": (k,), "scale_x": (k,)}
        for name, shape in shapes.items():
            if np.asarray(head.get(name)).shape != shape:
                return f"{name} must have shape {shape} (the features of this codesign)"
        if not (np.asarray(head["scale_x"]) > 0).all():
            return "scale_x must be positive"
        scale = head.get("kernel_scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            return "kernel_scale must be a positive number"
        share = head.get("share_basis")
        if isinstance(share, bool) or not isinstance(share, int) or not 0 <= share < len(basis_configs()):
            return f"share_basis must be an index below {len(basis_configs())}"
        return None

    def _network_ms(self, specs: list[KernelSpec]) -> float:
        head = self.heads["latency_ms"]
        z = (design_matrix([specs])[0] - np.asarray(head["mean_x"])) / np.asarray(head["scale_x"])
        return float(math.exp(np.concatenate([[1.0], z]) @ np.asarray(head["weights"])))

    def _basis_ms(self, specs: list[KernelSpec]) -> np.ndarray:
        # Every basis config: a kernel the shared config cannot fit is costed from one it fits.
        return mapped_ms(list(specs), basis_configs())[:, self.heads["latency_ms"]["share_basis"]]

    def predict(self, specs, use_measured: bool = True) -> np.ndarray:
        """Per kernel: its latency on the basis accelerator that ranked the reference rows most
        like the device, times the device's median ratio to it on those rows (additive, so that
        a search can sum options; whole networks go through ``predict_network``)."""
        specs = list(specs)
        self._check_fitted()
        if not specs:
            return np.zeros(0)
        return self._basis_ms(specs) * float(self.heads["latency_ms"]["kernel_scale"])

    def predict_network(self, specs, use_measured: bool = True) -> dict[str, Any]:
        """The whole network from the adapted model; per kernel, that total split in proportion to
        the kernels' basis-accelerator latencies."""
        specs = list(specs)
        self._check_fitted()
        total = self._network_ms(specs)
        per = self._basis_ms(specs)
        return {"latency_ms": total, "energy_mj": None, "kernels": len(specs), "measured_kernels": 0,
                "per_kernel_latency_ms": [float(v) for v in total * per / per.sum()],
                "latency_interval_ms": None, "out_of_range": []}

    def predict_interval(self, specs, use_measured: bool = True, level: float = 0.9):
        return None

    def out_of_range(self, specs):
        return [[] for _ in specs]

    def _meta(self) -> dict[str, Any]:
        meta = super()._meta()
        meta.update(reference=self.reference, sources=self.sources, design=design_names(),
                    basis=[c.to_dict() for c in basis_configs()], adaptation=self.adaptation)
        return meta

    def _restore(self, meta, arrays=None) -> None:
        super()._restore(meta)
        if meta.get("design") != design_names() or meta.get("basis") != [c.to_dict() for c in basis_configs()]:
            raise ValueError("the model uses other features or basis accelerators than this codesign computes")
        self.reference = list(meta["reference"])
        self.sources = list(meta["sources"])
        self.adaptation = meta.get("adaptation")  # absent from models saved before it was recorded


def check_row_count(n: int, method: str = "meta") -> None:
    """Refuse a table of fewer rows than ``method`` adapts from, saying how many it needs."""
    need = MIN_ROWS[method]
    if n < need:
        raise CodesignError(f"--method {method} needs at least {need} measured reference networks; the table has "
                            f"{n} (time the first {need} of `codesign calibrate --reference-set` in their order)")


def check_rows(rows: list[dict[str, Any]], kernels: list[list[KernelSpec]], reference: list[dict[str, str]],
               method: str = "meta") -> bool:
    """Refuse a table the few-shot methods cannot use: too few rows, kernel rows, duplicate
    networks, or reference networks listed in another order, skipped, or mixed with others.

    A table with no reference network at all is the user's own networks: the adaptation weighs
    the sources by how well they explain whatever rows it is given, so any networks measured on
    the device will do (the reference set is spread over the space on purpose; networks of one's
    own may not be).

    Args:
        rows: ``calibrate.read_table`` rows (latencies already checked finite and positive).
        kernels: the kernels of each row's network.
        reference: the reference set in order, dicts with ``genotype`` and ``signature``.

    Returns:
        True for a table of the user's own networks, False for the reference set.
    """
    check_row_count(len(rows), method)
    sigs = [network_signature(k) for k in kernels]
    first: dict[str, int] = {}
    for i, s in enumerate(sigs):
        if s in first:
            raise CodesignError(f"rows {first[s] + 1} and {i + 1} of the table are the same network; "
                                "give each network once")
        first[s] = i
    position = {r["signature"]: i for i, r in enumerate(reference)}
    if not any(s in position for s in sigs):
        return True
    if len(rows) > len(reference):
        raise CodesignError(f"the table has {len(rows)} rows; the reference set has {len(reference)} networks")
    for i, s in enumerate(sigs):
        if s not in position:
            raise CodesignError(f"row {i + 1} of the table is not a network of the reference set, while others are; "
                                "measure the networks `codesign calibrate --reference-set` writes, or only your own")
        if position[s] != i:
            raise CodesignError(f"row {i + 1} of the table is reference network {position[s] + 1}, expected "
                                f"{i + 1}: list the first {len(rows)} reference networks in their order")
    return False


def reference_entries(space=None, n: int = REFERENCE_SIZE) -> list[dict[str, str]]:
    """The reference set in order: genotype and kernel signature of each network."""
    from ..graph import module_kernels

    space = space if space is not None else create_reference_space()
    return [{"genotype": g, "signature": network_signature(module_kernels(space.build(g), tuple(space.input_shape)))}
            for g in reference_genotypes(space, n)]


def calibrate_meta(prior: Prior, kernels: list[list[KernelSpec]], latency_ms, new_device: str,
                   reference: list[str]) -> FewShotModel:
    """The few-shot model of ``new_device`` from its reference rows (kernels and latencies)."""
    x = design_matrix(kernels)
    y = np.asarray(latency_ms, dtype=np.float64)
    model = FewShotModel()
    model.device = new_device
    model.schedule = "measured"
    model.n_train = len(y)
    model.reference = list(reference)
    model.sources = prior.sources
    share = _share_basis(x, y)
    basis_ms = np.exp(x[:, len(FEATURE_NAMES) + share])
    model.heads = {"latency_ms": {"weights": prior.adapt(x, y), "mean_x": prior.mean_x, "scale_x": prior.scale_x,
                                  "share_basis": share, "kernel_scale": float(np.median(y / basis_ms))}}
    # how the prior was adapted (JSON has no infinity: a flat source weighting is "inf")
    model.adaptation = {k: (v if math.isfinite(v) else "inf") for k, v in prior.chosen.items()}
    model.adaptation["chosen_on_rows"] = len(y) >= MIN_SELECT_ROWS
    model.created_at = time.time()
    return model


class ChainKernels:
    """Kernels of a chain space's networks composed from its per-option kernels.

    A mobilenet-style network runs its stem, then each layer's chosen block, then its head, and
    each block's kernels do not depend on its neighbours; composing ``option_kernels`` (one export
    per layer and option) with the stem and head of one exported network gives every network's
    kernels without exporting it. ``check`` compares the composition with exported networks.
    """

    def __init__(self, space):
        from ..graph import module_kernels

        self.space = space
        self.options = space.option_kernels()
        g0 = space.format([0] * len(space.decisions()))
        whole = module_kernels(space.build(g0), tuple(space.input_shape))
        middle = self._blocks(space.parse(g0))
        for start in range(len(whole) - len(middle) + 1):
            if whole[start:start + len(middle)] == middle:
                self.head_start = start
                break
        else:
            raise CodesignError(f"the {space.name} space is not a chain of its options' kernels")
        self.stem, self.head = whole[:start], whole[start + len(middle):]

    def _blocks(self, choices: list[int]) -> list[KernelSpec]:
        return [s for layer, k in enumerate(choices) for s in self.options[layer][k]]

    def __call__(self, genotype: str) -> list[KernelSpec]:
        return self.stem + self._blocks(self.space.parse(genotype)) + self.head
