"""Learned optimizers (L2O): coordinatewise update rules meta-trained on task families.

    from codesign.l2o import load_optimizer
    opt = load_optimizer("rnnprop.json", model.parameters())   # a torch.optim.Optimizer

See docs/l2o.md for the rules, the tasks, meta-training and the file format.
"""

from .io import FORMAT, FORMAT_VERSION, load_optimizer, load_rule, save_rule
from .optim import LearnedOptimizer
from .rules import LSTMRule, RNNPropRule, UpdateRule, create_rule, list_rules
from .tasks import Task, create_task, list_tasks
from .train import TrainConfig, train

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
    "list_rules",
    "list_tasks",
    "load_optimizer",
    "load_rule",
    "save_rule",
    "train",
]
