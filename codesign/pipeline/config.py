"""``SearchConfig``: everything a run depends on, saved as the run directory's config.json (the
resolved config beside the results, so a run can be repeated) and checked again on ``--resume``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..errors import CodesignError
from ..search.budgets import OBJECTIVES, Budget, parse_budget
from ..search.regularizers import check_regularizers

_API_ONLY = ("profile_repeats", "profile_min_repeat_ms")  # settings without a CLI flag


def default_strategy(hw_space: str | None = None) -> str:
    """The strategy a search runs when none is named: ``zero-cost`` (by SynFlow) on a fixed device:
    of the training-free scores it ranks cells best on both spaces it was measured on, NB201 by
    NAS-Bench-201's public CIFAR-10 accuracies and DARTS by the final protocol's accuracies, where
    short trainings rank them poorly (docs/search.md, "Choosing the default", "Which training-free
    score"); ``gdas`` (with TuNAS's reward) when the hardware is co-searched, since only
    the gradient strategies minimise the objective that chooses the accelerator."""
    return "gdas" if hw_space else "zero-cost"


@dataclass
class SearchConfig:
    """Everything a run depends on (saved as config.json; --resume checks it)."""

    space: str = "nb201"
    space_args: dict = field(default_factory=dict)
    strategy: str | None = None  # None: default_strategy(hw_space), resolved on construction
    data: str = "digits"
    data_dir: str | None = None
    val_fraction: float = 0.5
    device: str = "cpu-local"  # a TVM device, or accel:NAME|PATH (a modelled accelerator)
    hw_space: str | None = None  # co-search: a hardware space (name or YAML) searched with the network
    schedule: str | None = None  # None: the device's default policy (tuned on a CPU, dlight on a GPU)
    tune_trials: int = 8  # mean MetaSchedule trials per kernel under the tuned policy
    train_device: str = "auto"  # where the supernet and the final network train: auto | cpu | cuda
    db: str | None = None
    cost_model: str | None = None
    latency_ms: str | None = None
    energy_mj: str | None = None
    area_mm2: str | None = None
    objective: str | None = None  # none | latency | energy | edp; None: edp with --hw-space, else none
    objective_weight: float = 0.1
    epochs: int = 30
    warmup_epochs: int = 2
    batch_size: int = 64
    lr: float = 0.05
    arch_lr: float = 0.01
    weight_decay: float = 3e-4
    lagrange_lr: float = 0.5
    tau_max: float = 10.0  # GDAS (Dong & Yang, CVPR 2019): 10 annealed linearly to 0.1
    tau_min: float = 0.1
    regularizer: str | None = None  # remedies against collapse, comma-separated (search.regularizers);
    # None: the strategy's default
    regularizer_args: dict = field(default_factory=dict)  # NAME.KEY -> value
    arch_batch_size: int | None = None  # the architecture step's batch (None: batch_size)
    max_passes: float | None = None  # stop a sample-based or weight-sharing search after this compute
    candidates: int = 8
    ws_candidates: int = 100  # rsws: architectures ranked with the shared weights
    ws_eval_batches: int = 4  # rsws: validation batches each candidate is first scored on
    zc_pool: int | None = None  # naswot/zero-cost: designs under the budgets scored without training (None: 100, or
    # with max_passes and zc_select "score", as many as the compute pays for; search.zero_cost.pool_size)
    zc_select: str = "score"  # naswot/zero-cost: score (the best-scored design wins) | val (the best trained)
    zc_score: str | None = None  # zero-cost: a score or scores joined by '+' (search.zero_cost.ZC_SCORES);
    # None: the strategy's (naswot: NASWOT; zero-cost: search.zero_cost.DEFAULT_ZC_SCORE)
    candidate_epochs: int = 4
    population: int = 4
    tournament: int = 2
    train_epochs: int = 30
    seed: int = 0
    measure: bool = True
    # Whole networks of the space timed on a TVM device before the search (cached in the profile
    # database) to fit what the kernel sums miss: per-network and per-kernel overhead, and from 4
    # networks on the in-network scale of the kernels. 0: the kernel sums at face value.
    calibrate_networks: int = 6
    compare: str | None = None
    arch_optimizer: str = "adam"
    weight_optimizer: str = "sgd"
    profile_repeats: int = 5
    profile_min_repeat_ms: float = 10.0
    profile_statistic: str = "median"  # how timed repeats become latencies, in profiles and measurement

    def __post_init__(self) -> None:
        if self.strategy is None:
            self.strategy = default_strategy(self.hw_space)
        if self.strategy == "zero-cost" and self.zc_score is None:  # written to config.json as it is run
            from ..search.zero_cost import DEFAULT_ZC_SCORE

            self.zc_score = DEFAULT_ZC_SCORE

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def command_line(self) -> str:
        """The ``codesign search`` command that makes this config (settings at their default are left
        out; those the CLI has no flag for follow as a comment)."""
        import shlex

        argv, api_only = ["codesign", "search"], []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if f.name == "strategy":
                default = default_strategy(self.hw_space)
            if f.name == "zc_score" and self.strategy == "zero-cost":
                from ..search.zero_cost import DEFAULT_ZC_SCORE

                default = DEFAULT_ZC_SCORE
            if value == default:
                continue
            if f.name == "space_args":
                for k, v in value.items():
                    argv += ["--space-arg", f"{k}={v}"]
            elif f.name == "measure":
                argv.append("--no-measure")
            elif f.name in _API_ONLY:
                api_only.append(f"{f.name}={value!r}")
            else:
                argv += ["--" + f.name.replace("_", "-"), str(value)]
        line = shlex.join(argv)
        return line + (f"  # and, through the Python API: {', '.join(api_only)}" if api_only else "")

    @classmethod
    def from_dict(cls, d: dict) -> SearchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CodesignError(f"unknown search setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def _check_types(self) -> None:
        """Every setting of the type of its default (from a damaged config.json, or a Python caller)."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            numeric = str(f.type).split("|")[0].strip()  # "float | None" -> "float"
            if default is None and numeric == "int":
                ok, kind = v is None or (isinstance(v, int) and not isinstance(v, bool)), "an integer or null"
            elif default is None and numeric == "float":
                ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
                kind = "a finite number or null"
            elif default is None:
                ok, kind = v is None or isinstance(v, str), "a string or null"
            elif isinstance(default, bool):
                ok, kind = isinstance(v, bool), "true or false"
            elif isinstance(default, int):
                ok, kind = isinstance(v, int) and not isinstance(v, bool), "an integer"
            elif isinstance(default, float):
                ok, kind = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a finite number"
            else:
                ok, kind = isinstance(v, type(default)), f"a {type(default).__name__}"
            if not ok:
                raise CodesignError(f"search setting {f.name} (--{f.name.replace('_', '-')}) must be {kind}, got {v!r}")

    def validate(self) -> None:
        from ..data import DATASETS
        from ..search.strategies import STRATEGIES
        from ..spaces import SPACES

        self._check_types()
        SPACES.check(self.space)
        STRATEGIES.check(self.strategy)
        if self.data not in DATASETS:
            raise CodesignError(f"unknown dataset {self.data!r}; choose from {', '.join(DATASETS)}")
        if self.compare not in (None, "random", "sequential"):
            raise CodesignError(f"--compare takes random or sequential, got {self.compare!r}")
        if self.compare == "sequential" and not self.hw_space:
            raise CodesignError("--compare sequential compares a co-search with the hardware team's sequential "
                                "design; it needs --hw-space")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise CodesignError(f"--objective takes {', '.join(OBJECTIVES)}, got {self.objective!r}")
        w = self.objective_weight
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise CodesignError(f"--objective-weight must be a number >= 0, got {w!r}")
        if self.hw_space and (self.device != "cpu-local" or self.cost_model):
            raise CodesignError("--hw-space searches the accelerator itself: drop --device/--cost-model "
                                "(the space names its base accelerator)")
        if self.area_mm2 is not None and not (self.hw_space or self.device.startswith("accel:")):
            raise CodesignError("an area_mm2 budget needs an accelerator target (--device accel:NAME or "
                                "--hw-space NAME); a TVM device has a fixed area")
        if self.device.startswith("accel:") and self.cost_model:
            raise CodesignError("--device accel:... is costed by the accelerator model; drop --cost-model")
        for name in ("epochs", "batch_size", "candidates", "candidate_epochs", "population", "tournament",
                     "profile_repeats", "ws_candidates", "ws_eval_batches", "zc_pool", "tune_trials"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise CodesignError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.calibrate_networks < 0 or self.calibrate_networks == 1:
            raise CodesignError(f"--calibrate-networks must be 0 (off) or >= 2, got {self.calibrate_networks}")
        for name in ("warmup_epochs", "train_epochs"):
            if getattr(self, name) < 0:
                raise CodesignError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "arch_lr", "tau_max", "tau_min", "lagrange_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise CodesignError(f"--{name.replace('_', '-')} must be a positive number, got {v!r}")
        for name in ("weight_decay", "profile_min_repeat_ms"):
            if getattr(self, name) < 0:
                raise CodesignError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)!r}")
        if self.seed < 0:
            raise CodesignError(f"--seed must be >= 0, got {self.seed}")
        if self.tau_min > self.tau_max:
            raise CodesignError(f"--tau-min ({self.tau_min}) must not exceed --tau-max ({self.tau_max}): the Gumbel "
                                "temperature anneals from --tau-max down to --tau-min")
        from ..search.device import resolve_train_device

        resolve_train_device(self.train_device)
        if not (self.hw_space or self.device.startswith("accel:")):
            from ..profile.schedules import is_tuned, tuning_strategy

            if self.schedule is None or is_tuned(self.schedule):
                tuning_strategy()  # profiling or the measured network may tune: a bad strategy fails now
        if self.zc_select not in ("score", "val"):
            raise CodesignError(f"--zc-select takes score or val, got {self.zc_select!r}")
        if self.strategy in ("zero-cost", "naswot"):
            from ..search.zero_cost import strategy_scores

            strategy_scores(self.strategy, self.zc_score)
        elif self.zc_score is not None:
            raise CodesignError(f"--zc-score ranks the designs of --strategy zero-cost; {self.strategy} scores none")
        if self.profile_statistic not in ("median", "min"):
            raise CodesignError(f"--statistic takes median or min, got {self.profile_statistic!r}")
        if self.warmup_epochs >= self.epochs and self.strategy in ("darts", "darts2", "gdas"):
            raise CodesignError(f"--warmup-epochs ({self.warmup_epochs}) must be below --epochs ({self.epochs})")
        if self.arch_batch_size is not None and (not isinstance(self.arch_batch_size, int) or self.arch_batch_size < 1):
            raise CodesignError(f"--arch-batch-size must be an int >= 1, got {self.arch_batch_size!r}")
        if self.max_passes is not None and not (isinstance(self.max_passes, (int, float))
                                                and math.isfinite(self.max_passes) and self.max_passes > 0):
            raise CodesignError(f"--max-passes must be a positive number, got {self.max_passes!r}")
        if self.max_passes is not None and self.strategy in ("darts", "darts2", "gdas"):
            raise CodesignError("--max-passes bounds random, evolution and rsws; gradient strategies run --epochs")
        if self.strategy in ("darts", "darts2", "gdas"):
            check_regularizers(self.regularizer, self.regularizer_args, self.strategy)
        elif self.regularizer not in (None, "none") or self.regularizer_args:
            raise CodesignError(f"--regularizer acts on the architecture weights of darts, darts2 and gdas; "
                                f"{self.strategy} has none")
        if not 0 < self.val_fraction < 1:
            raise CodesignError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        for spec in (self.arch_optimizer, self.weight_optimizer):
            if spec not in ("adam", "sgd") and not spec.startswith("l2o:"):
                raise CodesignError(f"optimizer {spec!r}: use adam, sgd or l2o:<name or file>")
            if spec.startswith("l2o:"):
                from ..l2o.io import load_rule

                load_rule(spec.split(":", 1)[1])  # file, weights and config checked now, not after profiling
        self.budgets()

    def budgets(self) -> list[Budget]:
        out = []
        if self.latency_ms is not None:
            out.append(parse_budget("latency_ms", self.latency_ms))
        if self.energy_mj is not None:
            out.append(parse_budget("energy_mj", self.energy_mj))
        if self.area_mm2 is not None:
            out.append(parse_budget("area_mm2", self.area_mm2))
        return out

    def resolved_objective(self) -> str:
        """What the search minimises inside the budgets: the energy-delay product on a co-search
        (hardware needs something to aim at), nothing else by default."""
        if self.objective is not None:
            return self.objective
        return "edp" if self.hw_space else "none"
