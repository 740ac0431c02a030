"""Meta-training of learned update rules by truncated backpropagation through time.

One *episode* samples a task (a family from ``tasks``, a fresh seed), starts it from its initial
point and runs ``unrolls`` segments of ``unroll_length`` optimisation steps with the rule. After
each segment the meta-loss (below) is backpropagated through the unrolled steps into the rule's
weights, the meta-gradient is clipped to norm ``clip`` and Adam takes one step; then the
parameters and the rule's state are detached, and the next segment continues from there
(truncated BPTT). As in Andrychowicz et al. 2016, second derivatives of the task loss are
dropped: the gradient fed to the rule is treated as an input.

Meta-loss of a segment: the mean over its steps of ``log f(theta_t) - log f(theta_0)``, with
theta_0 the episode's start. The log makes tasks of different scales (a quadratic at 1e2, a
cross-entropy at 2) weigh alike and keeps rewarding progress once the loss is small.

A segment whose meta-loss or meta-gradient is not finite is skipped (no update), counted in the
history and logged, and its episode ends there: the trajectory has diverged.

Checkpoints (``<out>.ckpt.json`` + the weights file it names, ``<out>.ckpt.eNNNNNN.npz``) are
written after every ``checkpoint_every`` episodes: rule weights, meta-Adam moments, the episode
counter and history. Every episode's task is a pure function of (seed, episode), so a resumed run
continues exactly where the killed one would have gone.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CodesignError
from ..files import check_output, read_npz, read_text
from .io import FORMAT_VERSION, read_meta, save_arrays, save_json, save_rule
from .rules import UpdateRule, create_rule, list_rules
from .tasks import create_task, parse_tasks

CKPT_FORMAT = "codesign-l2o-checkpoint"
# Training tasks draw seeds below 2**31; held-out evaluation tasks use seeds from 2**31 on.
HELD_OUT_SEED_BASE = 2**31


@dataclass
class TrainConfig:
    """Everything that defines a meta-training run (saved in checkpoints and optimizer files)."""

    optimizer: str = "rnnprop"
    tasks: list[str] = field(default_factory=lambda: ["quadratic"])
    episodes: int = 200
    unrolls: int = 5
    unroll_length: int = 20
    meta_lr: float = 3e-3
    clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 1
    rule_config: dict = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        """Optimisation steps per episode (the horizon the rule is trained for)."""
        return self.unrolls * self.unroll_length

    def validate(self) -> None:
        if self.optimizer not in list_rules():
            raise CodesignError(f"unknown --optimizer {self.optimizer!r}; choose from {', '.join(list_rules())}")
        parse_tasks(",".join(self.tasks))
        for name in ("episodes", "unrolls", "unroll_length", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise CodesignError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.meta_lr > 0 and math.isfinite(self.meta_lr)):
            raise CodesignError(f"--meta-lr must be a positive number, got {self.meta_lr}")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise CodesignError(f"--clip must be a positive number, got {self.clip}")
        if self.seed < 0:
            raise CodesignError(f"--seed must be >= 0, got {self.seed}")


QUICK = {"episodes": 40, "unrolls": 5, "unroll_length": 20}


def episode_plan(cfg: TrainConfig, episode: int) -> tuple[str, int]:
    """(task family, task seed) of one episode: a pure function of (seed, episode)."""
    ss = np.random.SeedSequence([cfg.seed, episode])
    a, b = ss.generate_state(2)
    return cfg.tasks[int(a) % len(cfg.tasks)], int(b) % HELD_OUT_SEED_BASE


def ckpt_paths(out: Path) -> tuple[Path, Path]:
    return out.with_suffix(".ckpt.json"), out.with_suffix(".ckpt.npz")


def _comparable(cfg_dict: dict) -> dict:
    # the number of episodes may grow between runs: that is how a finished run is extended
    return {k: v for k, v in cfg_dict.items() if k not in ("episodes", "checkpoint_every")}


def _save_checkpoint(out, cfg, rule, meta_opt, episode, history):
    jpath, npath = ckpt_paths(out)
    arrays = {f"rule/{k}": v.detach().numpy() for k, v in rule.state_dict().items()}
    for i, p in enumerate(rule.parameters()):
        st = meta_opt.state.get(p)
        if st:
            arrays[f"adam/{i}/exp_avg"] = st["exp_avg"].numpy()
            arrays[f"adam/{i}/exp_avg_sq"] = st["exp_avg_sq"].numpy()
            arrays[f"adam/{i}/step"] = np.asarray(float(st["step"]))
    # The weights go to a file of their own episode and the JSON, written last, names it: a kill
    # between the two writes leaves the previous JSON naming the previous weights, still there.
    # (One fixed weights file was overwritten first, and a kill in between resumed the older
    # episode with the newer weights.)
    weights = _episode_weights(out, episode)
    save_arrays(weights, arrays)
    save_json(jpath, {"format": CKPT_FORMAT, "format_version": FORMAT_VERSION, "config": dataclasses.asdict(cfg),
                      "episode": episode, "history": history, "weights": weights.name})
    for older in [npath, *_all_episode_weights(out)]:  # the JSON no longer names them
        if older != weights:
            older.unlink(missing_ok=True)


def _episode_weights(out: Path, episode: int) -> Path:
    return out.with_suffix(f".ckpt.e{episode:06d}.npz")


def _all_episode_weights(out: Path) -> list[Path]:
    import glob

    pattern = glob.escape(str(out.with_suffix(""))) + ".ckpt.e[0-9][0-9][0-9][0-9][0-9][0-9].npz"
    return [Path(p) for p in glob.glob(pattern)]


def _load_checkpoint(out, cfg, rule, meta_opt) -> tuple[int, dict]:
    jpath, npath = ckpt_paths(out)
    meta = read_meta_ckpt(jpath)
    if _comparable(meta["config"]) != _comparable(dataclasses.asdict(cfg)):
        diff = sorted(k for k, v in _comparable(dataclasses.asdict(cfg)).items() if meta["config"].get(k) != v)
        raise CodesignError(
            f"checkpoint {jpath} was made with other settings ({', '.join(diff)} differ); "
            "pass the same flags, or --restart to discard it"
        )
    if "weights" in meta:
        npath = jpath.parent / meta["weights"]
    try:
        arrays = read_npz(npath, "checkpoint weights")
    except CodesignError as exc:
        raise CodesignError(f"{exc}; pass --restart") from None
    try:
        rule.load_state_dict({k[5:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("rule/")})
    except (RuntimeError, TypeError) as exc:
        raise CodesignError(f"checkpoint weights {npath} do not fit the rule ({str(exc).splitlines()[0]}); "
                            "pass --restart") from None
    for i, p in enumerate(rule.parameters()):
        if f"adam/{i}/exp_avg" in arrays:
            meta_opt.state[p] = {
                "step": torch.tensor(float(arrays[f"adam/{i}/step"])),
                "exp_avg": torch.from_numpy(arrays[f"adam/{i}/exp_avg"]).clone(),
                "exp_avg_sq": torch.from_numpy(arrays[f"adam/{i}/exp_avg_sq"]).clone(),
            }
    return int(meta["episode"]), meta["history"]


def _is_weights_name(name, episode: int) -> bool:
    """A checkpoint names its weights file beside it, of its own episode: nothing else is read."""
    return isinstance(name, str) and name.endswith(f".ckpt.e{episode:06d}.npz") and "/" not in name \
        and "\\" not in name and not name.startswith(".")


def read_meta_ckpt(path: Path) -> dict:
    import json

    try:
        meta = json.loads(read_text(path, "checkpoint"))
    except (CodesignError, json.JSONDecodeError) as exc:
        raise CodesignError(f"checkpoint {path} is unreadable ({exc.__class__.__name__}); pass --restart") from None
    if not isinstance(meta, dict) or meta.get("format") != CKPT_FORMAT or meta.get("format_version") != FORMAT_VERSION \
            or not isinstance(meta.get("config"), dict) or not isinstance(meta.get("episode"), int) \
            or not isinstance(meta.get("history"), dict) \
            or not (meta.get("weights") is None or _is_weights_name(meta["weights"], meta["episode"])):
        raise CodesignError(f"{path} is not a version-{FORMAT_VERSION} codesign l2o checkpoint; pass --restart")
    return meta


def run_episode(rule: UpdateRule, meta_opt, cfg: TrainConfig, family: str, task_seed: int, log) -> dict:
    """Meta-train on one task: ``cfg.unrolls`` truncated segments. Returns episode statistics."""
    task = create_task(family, task_seed)
    params = [p.clone().requires_grad_() for p in task.init_params()]
    sizes = [p.numel() for p in params]
    state = rule.init_state(sum(sizes))  # one state over all coordinates, one rule call per step
    log_f0 = None
    seg_losses, skipped = [], 0
    for _ in range(cfg.unrolls):
        terms = []
        for _ in range(cfg.unroll_length):
            # The task loss is evaluated once, on detached leaves: the rule's input gradient g is
            # treated as constant (first order), so d f(theta_t) / d theta_t is that same g and the
            # meta-term below carries it into theta_t's graph. Calling autograd.grad on the
            # unrolled graph instead re-walks the whole segment every step (quadratic cost).
            leaves = [p.detach().requires_grad_() for p in params]
            loss = task.loss(leaves)
            grads = torch.autograd.grad(loss, leaves)
            f = float(loss.detach())
            if not math.isfinite(f):
                terms.append(torch.tensor(float("nan")))
                break
            if log_f0 is None:
                log_f0 = math.log(max(f, 1e-30))
            # value: log f - log f0; gradient w.r.t. theta_t: g / f, the gradient of log f
            surrogate = sum(((g / max(f, 1e-30)) * (p - p.detach())).sum() for p, g in zip(params, grads))
            terms.append(surrogate + (math.log(max(f, 1e-30)) - log_f0))
            update, state = rule(torch.cat([g.reshape(-1) for g in grads]), state)
            params = [p + u.view_as(p) for p, u in zip(params, update.split(sizes))]
        meta_loss = torch.stack([torch.as_tensor(t) for t in terms]).mean()
        meta_opt.zero_grad()
        ok = bool(torch.isfinite(meta_loss))
        if ok and meta_loss.requires_grad:
            meta_loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(rule.parameters(), cfg.clip)
            ok = bool(torch.isfinite(norm))
        if not ok:
            skipped += 1
            log(f"{family} seed {task_seed}: non-finite meta-loss or meta-gradient; "
                "segment skipped, episode ended")
            break
        if meta_loss.requires_grad:
            meta_opt.step()
        seg_losses.append(float(meta_loss.detach()))
        params = [p.detach().requires_grad_() for p in params]
        state = {k: v.detach() for k, v in state.items()}
    return {"task": family, "seed": task_seed, "meta_loss": float(np.mean(seg_losses)) if seg_losses else None,
            "skipped": skipped}


def train(cfg: TrainConfig, out: str | Path, restart: bool = False, progress: bool = True,
          log=None) -> dict:
    """Meta-train a rule and save it as ``out`` (.json + .npz); resume from its checkpoint.

    Args:
        cfg: the run's settings.
        out: the optimizer file to write (must end in .json).
        restart: discard an existing checkpoint instead of resuming it.
        progress: progress on stderr (a bar on a terminal, a line every 10 s in a log).
        log: callable for one-line messages (default: print to stderr).

    Returns:
        A summary: episodes run, skipped segments, meta-loss of the first and last tenth,
        seconds, the optimizer file.

    Raises:
        CodesignError: bad settings, a checkpoint from other settings or of another format.
    """
    from .. import progress as _progress

    cfg.validate()
    out = Path(out)
    if out.suffix != ".json":
        raise CodesignError(f"--out must end in .json (weights go beside it as .npz), got {out}")
    for p in (out, out.with_suffix(".npz"), *ckpt_paths(out)):
        check_output(p, "--out")
    create_rule(cfg.optimizer, **cfg.rule_config)  # a bad rule config fails before any file is written
    jpath, _ = ckpt_paths(out)
    if jpath.exists() and not restart:  # a damaged checkpoint fails now, not after the set-up
        read_meta_ckpt(jpath)
    out.parent.mkdir(parents=True, exist_ok=True)
    if log is None:
        def log(msg):
            _progress.say(msg)
    threads = torch.get_num_threads()
    # The tensors here are tiny ([coordinates, 20]); on a shared 2-core machine intra-op threads
    # made each LSTM step 50x slower (147 ms against 2.8 ms) through contention, so one thread.
    torch.set_num_threads(1)
    try:
        return _train(cfg, out, restart, progress, log)
    finally:
        torch.set_num_threads(threads)


def _train(cfg, out, restart, progress, log):
    from .. import progress as _progress

    torch.manual_seed(cfg.seed)
    rule = create_rule(cfg.optimizer, **cfg.rule_config)
    meta_opt = torch.optim.Adam(rule.parameters(), lr=cfg.meta_lr)
    start, history = 0, {"meta_loss": [], "tasks": [], "skipped": 0}
    jpath, npath = ckpt_paths(out)
    if jpath.exists() and not restart:
        start, history = _load_checkpoint(out, cfg, rule, meta_opt)
        log(f"resuming {out} from episode {start}/{cfg.episodes}")
    t0 = time.perf_counter()
    bar = _progress.bar(cfg.episodes, f"l2o {cfg.optimizer}", unit="episode", enabled=progress, every_s=10.0,
                        initial=start)
    for ep in range(start, cfg.episodes):
        family, seed = episode_plan(cfg, ep)
        stats = run_episode(rule, meta_opt, cfg, family, seed, log)
        history["meta_loss"].append(stats["meta_loss"])
        history["tasks"].append(family)
        history["skipped"] += stats["skipped"]
        bar.update(1, **({"task": family, "meta_loss": f"{stats['meta_loss']:.3f}"}
                         if stats["meta_loss"] is not None else {}))
        if (ep + 1) % cfg.checkpoint_every == 0 or ep + 1 == cfg.episodes:
            _save_checkpoint(out, cfg, rule, meta_opt, ep + 1, history)
    bar.close()
    losses = [x for x in history["meta_loss"] if x is not None]
    tenth = max(1, len(losses) // 10)
    summary = {
        "config": dataclasses.asdict(cfg),
        "horizon": cfg.horizon,
        "episodes": cfg.episodes,
        "skipped_segments": history["skipped"],
        "meta_loss_first_tenth": float(np.mean(losses[:tenth])) if losses else None,
        "meta_loss_last_tenth": float(np.mean(losses[-tenth:])) if losses else None,
        "seconds_this_run": round(time.perf_counter() - t0, 2),
    }
    save_rule(rule, out, training=summary)
    summary["out"] = str(out)
    return summary


def read_training(path) -> dict:
    """The training summary stored in an optimizer file or shipped optimizer (empty if none)."""
    from .io import resolve_optimizer_path

    return read_meta(resolve_optimizer_path(path)).get("training", {})
