"""``SearchConfig``: everything a run depends on, saved as the run directory's config.json (the
resolved config beside the results, so a run can be repeated) and checked again on ``--resume``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..errors import CodesignError
from ..search.budgets import Budget, parse_budget


@dataclass
class SearchConfig:
    """Everything a run depends on (saved as config.json; --resume checks it)."""

    space: str = "nb201"
    space_args: dict = field(default_factory=dict)
    strategy: str = "darts"
    data: str = "digits"
    data_dir: str | None = None
    val_fraction: float = 0.5
    device: str = "cpu-local"
    schedule: str = "untuned"
    db: str | None = None
    cost_model: str | None = None
    latency_ms: str | None = None
    energy_mj: str | None = None
    epochs: int = 30
    warmup_epochs: int = 2
    batch_size: int = 64
    lr: float = 0.05
    arch_lr: float = 0.01
    weight_decay: float = 3e-4
    lagrange_lr: float = 0.5
    tau_max: float = 5.0
    tau_min: float = 0.5
    candidates: int = 8
    candidate_epochs: int = 4
    population: int = 4
    tournament: int = 2
    train_epochs: int = 30
    seed: int = 0
    measure: bool = True
    compare: str | None = None
    arch_optimizer: str = "adam"
    weight_optimizer: str = "sgd"
    profile_repeats: int = 5
    profile_min_repeat_ms: float = 10.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SearchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CodesignError(f"unknown search setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def validate(self) -> None:
        from ..data import DATASETS
        from ..search.strategies import STRATEGIES
        from ..spaces import SPACES

        SPACES.check(self.space)
        STRATEGIES.check(self.strategy)
        if self.data not in DATASETS:
            raise CodesignError(f"unknown dataset {self.data!r}; choose from {', '.join(DATASETS)}")
        if self.compare not in (None, "random"):
            raise CodesignError(f"--compare takes random, got {self.compare!r}")
        for name in ("epochs", "batch_size", "candidates", "candidate_epochs", "population", "tournament",
                     "profile_repeats"):
            if getattr(self, name) < 1:
                raise CodesignError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_epochs", "train_epochs"):
            if getattr(self, name) < 0:
                raise CodesignError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "arch_lr", "tau_max", "tau_min"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise CodesignError(f"--{name.replace('_', '-')} must be a positive number, got {v!r}")
        if self.warmup_epochs >= self.epochs and self.strategy in ("darts", "darts2", "gdas"):
            raise CodesignError(f"--warmup-epochs ({self.warmup_epochs}) must be below --epochs ({self.epochs})")
        if not 0 < self.val_fraction < 1:
            raise CodesignError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        for spec in (self.arch_optimizer, self.weight_optimizer):
            if spec not in ("adam", "sgd") and not spec.startswith("l2o:"):
                raise CodesignError(f"optimizer {spec!r}: use adam, sgd or l2o:<name or file>")
            if spec.startswith("l2o:"):
                from ..l2o import resolve_optimizer_path

                resolve_optimizer_path(spec.split(":", 1)[1])  # a clear error now, not after profiling
        self.budgets()

    def budgets(self) -> list[Budget]:
        out = []
        if self.latency_ms is not None:
            out.append(parse_budget("latency_ms", self.latency_ms))
        if self.energy_mj is not None:
            out.append(parse_budget("energy_mj", self.energy_mj))
        return out
