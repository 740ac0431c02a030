"""The public NAS-Bench-201 / NATS-Bench (topology) CIFAR-10 accuracies, read from a table the user
supplies, to judge a cell the way a public benchmark does: its accuracy after the benchmark's
200-epoch training, and its percentile among the connected cells that meet the same latency budget
on codesign's cost table.

codesign ships no copy of the table. Any CSV with one row per cell works, with the cell in NB201's
string form (``|nor_conv_3x3~0|+|...|``) in a column ``ArchitectureString`` or ``arch`` and the
CIFAR-10 test accuracy (percent or fraction) in ``CIFAR10TestAccuracy200Epochs``,
``cifar10_test_accuracy`` or ``cifar10``; the NATS-Bench API writes such a table in a few lines
(``api.arch(i)``, ``api.get_more_info(i, "cifar10", hp=200)["test-accuracy"]``). A table that
does not give every one of the 15,625 cells exactly once is refused.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np

ARCH_COLUMNS = ("ArchitectureString", "arch", "arch_str")
ACCURACY_COLUMNS = ("CIFAR10TestAccuracy200Epochs", "cifar10_test_accuracy", "cifar10")
CELLS = 5 ** 6


class TableError(ValueError):
    """The file is not a complete NB201 accuracy table (one line for the user)."""


def read_table(path: str | Path, space) -> dict[str, float]:
    """{genotype: CIFAR-10 test accuracy in percent} for every cell of ``space`` (an NB201Space).

    Raises:
        TableError: missing file or columns, an unreadable row, a duplicate or unknown cell, or
            fewer than the 15,625 cells.
    """
    path = Path(path)
    if not path.is_file():
        raise TableError(f"NB201 table {path}: no such file")
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            arch_col = next((c for c in ARCH_COLUMNS if c in fields), None)
            acc_col = next((c for c in ACCURACY_COLUMNS if c in fields), None)
            if arch_col is None or acc_col is None:
                raise TableError(f"NB201 table {path}: needs a cell column ({' or '.join(ARCH_COLUMNS)}) and a "
                                 f"CIFAR-10 accuracy column ({' or '.join(ACCURACY_COLUMNS)}); found {fields[:6]}")
            table: dict[str, float] = {}
            for line, row in enumerate(reader, start=2):
                try:
                    genotype = space.format(space.parse(row[arch_col]))
                    acc = float(row[acc_col])
                except Exception as e:
                    raise TableError(f"NB201 table {path}, line {line}: {e}") from None
                if not 0 <= acc <= 100:
                    raise TableError(f"NB201 table {path}, line {line}: accuracy {acc} is not a percentage or fraction")
                if genotype in table:
                    raise TableError(f"NB201 table {path}, line {line}: cell {genotype} appears twice")
                table[genotype] = acc
    except UnicodeDecodeError:
        raise TableError(f"NB201 table {path}: not a text CSV file") from None
    if len(table) != CELLS:
        raise TableError(f"NB201 table {path}: {len(table)} cells, the space has {CELLS}")
    if max(table.values()) <= 1.0:  # fractions: read as percent
        table = {g: 100.0 * a for g, a in table.items()}
    return table


def feasible_cells(space, costs, budget_ms: float) -> list[list[int]]:
    """The connected cells of ``space`` whose latency on ``costs`` (a CostTable of ``space``) is
    within ``budget_ms``, in enumeration order."""
    cells = (list(c) for c in itertools.product(*[range(len(d.options)) for d in space.decisions()]))
    return [c for c in cells if space.valid(c) and costs.of(c, "latency_ms") <= budget_ms]


def feasible_accuracies(table: dict[str, float], space, costs, budget_ms: float) -> np.ndarray:
    """Sorted public accuracies of ``feasible_cells``."""
    return np.sort(np.array([table[space.format(c)] for c in feasible_cells(space, costs, budget_ms)]))


def judge(table: dict[str, float], feasible: np.ndarray, genotype: str) -> dict:
    """A cell's public accuracy and its percentile among ``feasible`` (the share at or below it)."""
    acc = table[genotype]
    return {"public_test_accuracy": acc,
            "public_percentile": float(100.0 * np.searchsorted(feasible, acc, side="right") / len(feasible))}
