"""Learned optimizers (L2O): coordinatewise update rules meta-trained on task families.

    from codesign.l2o import load_optimizer
    opt = load_optimizer("l2o:supernet", alphas)         # shipped, or a file from `codesign l2o train`
    loss.backward(); opt.step()                          # like any torch.optim.Optimizer

See docs/l2o.md for the rules, the tasks, meta-training and the file format.
"""

from .io import (
    FORMAT,
    FORMAT_VERSION,
    list_pretrained,
    load_optimizer,
    load_rule,
    resolve_optimizer_path,
    save_rule,
)
from .optim import LearnedOptimizer
from .rules import LSTMRule, RNNPropRule, UpdateRule, create_rule, list_rules
from .tasks import Task, create_task, list_tasks
from .train import TrainConfig, read_training, train

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LSTMRule",
    "LearnedOptimizer",
    "RNNPropRule",
    "Task",
    "TrainConfig",
    "UpdateRule",
    "create_rule",
    "create_task",
    "list_pretrained",
    "list_rules",
    "list_tasks",
    "load_optimizer",
    "load_rule",
    "read_training",
    "resolve_optimizer_path",
    "save_rule",
    "train",
]
