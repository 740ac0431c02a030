"""``codesign l2o train|eval|list|info``: meta-train learned optimizers and measure them."""

from __future__ import annotations

import math

from ..errors import CodesignError
from .common import print_json


def register(sub) -> None:
    top = sub.add_parser(
        "l2o", help="learned optimizers: meta-train, evaluate against Adam/RMSprop/SGD, list",
        description="Learned optimizers (L2O): coordinatewise LSTM update rules meta-trained by "
        "truncated backpropagation through unrolled optimisation on task families, saved as JSON + npz "
        "and usable as torch optimizers (codesign.l2o.load_optimizer) or in `codesign search`.",
    )
    l2o = top.add_subparsers(dest="l2o_command", metavar="ACTION")

    t = l2o.add_parser(
        "train", help="meta-train an optimizer on task families (checkpoints and resumes)",
        description="Meta-train an update rule by truncated BPTT: every episode draws a task of the given "
        "families with a fresh seed, runs UNROLLS segments of UNROLL_LENGTH steps, and after each "
        "segment takes one Adam step on the rule's weights (meta-gradient clipped to --clip). A segment "
        "whose meta-loss or meta-gradient is NaN/inf is skipped and logged. A checkpoint beside --out "
        "(<out>.ckpt.json/.npz) is written every --checkpoint-every episodes; running the same command "
        "again resumes it (raise --episodes to extend a finished run).",
    )
    t.add_argument("--task", required=True, metavar="T[,T...]",
                   help="task families to mix (see `codesign l2o list`): quadratic, mlp, mlp_relu, convnet, supernet")
    t.add_argument("--out", required=True, metavar="FILE.json", help="optimizer file to write (weights beside it as .npz)")
    t.add_argument("--optimizer", default="rnnprop", help="update rule: lstm (Andrychowicz et al. 2016) or "
                   "rnnprop (Lv et al. 2017) (default rnnprop)")
    t.add_argument("--episodes", type=int, default=None, help="tasks to meta-train on (default 200; 40 with --quick)")
    t.add_argument("--unrolls", type=int, default=None, help="truncated segments per episode (default 5)")
    t.add_argument("--unroll-length", type=int, default=None, help="optimisation steps per segment (default 20)")
    t.add_argument("--meta-lr", type=float, default=3e-3, help="learning rate of the meta-optimizer, Adam (default 3e-3)")
    t.add_argument("--clip", type=float, default=1.0, help="meta-gradient norm clip (default 1.0)")
    t.add_argument("--seed", type=int, default=0, help="seed of the rule's initialisation and the task draws (default 0)")
    t.add_argument("--checkpoint-every", type=int, default=1, help="episodes between checkpoints (default 1)")
    t.add_argument("--quick", action="store_true", help="40 episodes: a smoke run in about a minute")
    t.add_argument("--restart", action="store_true", help="discard an existing checkpoint instead of resuming it")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--json", action="store_true", help="print the training summary as JSON")
    t.set_defaults(func=_train)

    e = l2o.add_parser(
        "eval", help="learned optimizer vs tuned Adam, RMSprop and SGD+momentum on held-out tasks",
        description="Run an optimizer file on held-out tasks (seeds never drawn in meta-training) and "
        "compare its final full-data loss and loss curve with Adam, RMSprop and SGD with momentum 0.9, "
        "each with its learning rate tuned on a grid (1e-3 .. 1) on two separate tuning seeds.",
    )
    e.add_argument("optimizer", metavar="OPT", help="optimizer file (.json) or shipped name (l2o:general, l2o:supernet)")
    e.add_argument("--task", required=True, help="task family to evaluate on")
    e.add_argument("--steps", type=int, default=None,
                   help="optimisation steps per run (default: the horizon the optimizer was trained for)")
    e.add_argument("--seeds", type=int, default=5, help="held-out tasks to average over (default 5)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--json", action="store_true", help="print JSON (with the loss curves)")
    e.set_defaults(func=_eval)

    ls = l2o.add_parser("list", help="update rules, task families and shipped optimizers",
                        description="List the update rules, the task families and the optimizers shipped "
                        "with codesign (names usable as l2o:NAME) with how they were trained.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_list)

    i = l2o.add_parser("info", help="show an optimizer file's rule, config and training summary",
                       description="Validate an optimizer file (format, version, weights) and print what it is.")
    i.add_argument("optimizer", metavar="OPT", help="optimizer file (.json) or shipped name")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_info)

    top.set_defaults(func=lambda args: _no_action(top))


def _no_action(parser) -> int:
    parser.print_help()
    return 0


def _train(args) -> int:
    from ..l2o.tasks import parse_tasks
    from ..l2o.train import QUICK, TrainConfig, train

    defaults = QUICK if args.quick else {"episodes": 200, "unrolls": 5, "unroll_length": 20}
    cfg = TrainConfig(
        optimizer=args.optimizer,
        tasks=parse_tasks(args.task),
        episodes=args.episodes if args.episodes is not None else defaults["episodes"],
        unrolls=args.unrolls if args.unrolls is not None else defaults["unrolls"],
        unroll_length=args.unroll_length if args.unroll_length is not None else defaults["unroll_length"],
        meta_lr=args.meta_lr, clip=args.clip, seed=args.seed, checkpoint_every=args.checkpoint_every,
    )
    summary = train(cfg, args.out, restart=args.restart, progress=not args.no_progress)
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {summary['out']}: {cfg.optimizer} on {','.join(cfg.tasks)}, {cfg.episodes} episodes of "
              f"{cfg.horizon} steps; meta-loss {_fmt(summary['meta_loss_first_tenth'])} (first tenth) -> "
              f"{_fmt(summary['meta_loss_last_tenth'])} (last tenth); {summary['skipped_segments']} segments skipped")
    return 0


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _eval(args) -> int:
    from ..l2o.evaluate import compare
    from ..l2o.io import load_rule, read_meta, resolve_optimizer_path
    from ..l2o.tasks import parse_tasks

    path = resolve_optimizer_path(args.optimizer)
    names = parse_tasks(args.task)
    if len(names) != 1:
        raise CodesignError(f"--task takes one family for eval, got {len(names)}; run eval once per family")
    task = names[0]
    if args.steps is not None and args.steps < 1 or args.seeds < 1:
        raise CodesignError(f"--steps and --seeds must be >= 1, got {args.steps} and {args.seeds}")
    rule = load_rule(path)
    steps = args.steps
    if steps is None:
        steps = int(read_meta(path).get("training", {}).get("horizon", 100))
    label = f"l2o_{rule.kind}"
    result = compare({label: rule}, task, steps, seeds=args.seeds, progress=not args.no_progress)
    result["optimizer_file"] = str(path)
    if args.json:
        print_json(result)
        return 0
    print(f"{task}, {steps} steps, {len(result['test_seeds'])} held-out seeds: mean final loss")
    for name, r in sorted(result["optimizers"].items(), key=lambda kv: kv[1]["final_loss_mean"]):
        lr = "" if r["lr"] is None else f"  (lr {r['lr']:g})"
        loss = r["final_loss_mean"]
        print(f"  {name:14s} {loss:.4g}{lr}" if math.isfinite(loss) else f"  {name:14s} diverged{lr}")
    print(f"learned / best baseline ({result['best_baseline']}): {result['learned_vs_best_baseline'][label]:.3g}")
    return 0


def _describe(path) -> dict:
    from ..l2o.io import load_rule, read_meta

    meta = read_meta(path)
    load_rule(path)  # validates the weights too
    tr = meta.get("training", {})
    cfg = tr.get("config", {})
    return {"file": str(path), "kind": meta["kind"], "config": meta.get("config", {}),
            "tasks": cfg.get("tasks"), "episodes": tr.get("episodes"), "horizon": tr.get("horizon"),
            "meta_loss_first_tenth": tr.get("meta_loss_first_tenth"),
            "meta_loss_last_tenth": tr.get("meta_loss_last_tenth"),
            "skipped_segments": tr.get("skipped_segments"), "command": tr.get("command")}


def _list(args) -> int:
    from ..l2o.io import PRETRAINED_DIR, list_pretrained
    from ..l2o.rules import list_rules
    from ..l2o.tasks import list_tasks

    shipped = {name: _describe(PRETRAINED_DIR / f"{name}.json") for name in list_pretrained()}
    if args.json:
        print_json({"rules": list_rules(), "tasks": list_tasks(), "pretrained": shipped})
        return 0
    print("update rules: " + ", ".join(list_rules()))
    print("task families: " + ", ".join(list_tasks()))
    print("shipped optimizers (use as l2o:NAME):")
    for name, d in shipped.items():
        print(f"  {name:12s} {d['kind']} on {','.join(d['tasks'] or [])}, {d['episodes']} episodes, "
              f"horizon {d['horizon']} steps")
    return 0


def _info(args) -> int:
    from ..l2o.io import resolve_optimizer_path

    d = _describe(resolve_optimizer_path(args.optimizer))
    if args.json:
        print_json(d)
        return 0
    for k, v in d.items():
        if v is not None:
            print(f"{k}: {v}")
    return 0
