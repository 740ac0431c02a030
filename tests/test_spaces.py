"""Search spaces: registry, genotype grammar, derived networks, the kernels listed for profiling."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch

from codesign.errors import CodesignError
from codesign.predict.graph import module_kernels
from codesign.spaces import create_space, list_spaces
from codesign.spaces.darts import NODES, PRIMITIVES, Genotype, edges

DARTS_V2 = (
    "normal=sep_conv_3x3@0,sep_conv_3x3@1|sep_conv_3x3@0,sep_conv_3x3@1|sep_conv_3x3@1,skip_connect@0|"
    "skip_connect@0,dil_conv_3x3@2;reduce=max_pool_3x3@0,max_pool_3x3@1|skip_connect@2,max_pool_3x3@1|"
    "max_pool_3x3@0,skip_connect@2|skip_connect@2,max_pool_3x3@1"
)


def random_genotype(rng: random.Random) -> Genotype:
    def cell():
        return tuple((rng.choice(PRIMITIVES[1:]), rng.randrange(n + 2)) for n in range(NODES) for _ in range(2))

    return Genotype(cell(), cell())


def test_registry():
    assert "darts" in list_spaces()
    with pytest.raises(CodesignError, match="unknown search space 'nasnet'; known: darts"):
        create_space("nasnet")


def test_darts_has_14_edges_and_8_ops():
    assert len(edges()) == 14 and len(PRIMITIVES) == 8


def test_genotype_round_trips():
    assert str(Genotype.parse(DARTS_V2)) == DARTS_V2
    rng = random.Random(1)
    for _ in range(20):
        g = random_genotype(rng)
        assert Genotype.parse(str(g)) == g


@pytest.mark.parametrize("text, message", [
    ("normal=sep_conv_3x3@0", "normal=...;reduce=..."),
    (DARTS_V2.replace("sep_conv_3x3@0,sep_conv_3x3@1|", "", 1), "4 nodes"),
    (DARTS_V2.replace("dil_conv_3x3@2", "dil_conv_3x3@5"), "input '5' must be an int in [0, 5)"),
    (DARTS_V2.replace("dil_conv_3x3", "conv_7x7"), "unknown op 'conv_7x7'"),
    (DARTS_V2.replace("skip_connect@0,dil", "skip_connect@0;dil"), "normal=...;reduce=..."),
])
def test_genotype_errors(text, message):
    with pytest.raises(CodesignError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        Genotype.parse(text)


def test_built_network_runs_and_trains():
    net = create_space("darts", c=4, layers=3).build(DARTS_V2)
    x = torch.randn(2, 3, 16, 16)
    out = net(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_listed_kernels_cover_every_derived_network():
    space = create_space("darts", c=8, layers=5)
    listed = set(space.kernels((1, 3, 16, 16)))
    rng = random.Random(0)
    for _ in range(2):
        net = space.build(random_genotype(rng))
        missing = [k.key() for k in module_kernels(net, (1, 3, 16, 16)) if k not in listed]
        assert missing == []


def test_edge_op_kernels_cost_each_choice():
    space = create_space("darts", c=4, layers=3)
    table = space.edge_op_kernels((1, 3, 8, 8))
    assert len(table) == 3 * 14 * 8
    assert table[(0, 0, "none")] == [] and table[(0, 0, "skip_connect")] == []
    reduction_cell = 1  # layers // 3
    strided = table[(reduction_cell, 0, "sep_conv_3x3")][1]
    assert strided.attr("stride") == 2 and strided.input_shape == (1, 8, 8, 8)


def test_profile_cli_profiles_a_space(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "codesign.cli", "profile", "--space", "darts", "--space-arg", "c=4",
         "--space-arg", "layers=3", "--input-shape", "1,3,8,8", "--repeats", "1", "--min-repeat-ms", "0",
         "--db", str(tmp_path / "p.sqlite")],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert " 0 failed" in out.stdout


def test_profile_cli_space_errors(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "codesign.cli", "profile", "--space", "darts", "--space-arg", "width=4",
         "--db", str(tmp_path / "p.sqlite")], capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2 and "--space-arg" in out.stderr and "Traceback" not in out.stderr
