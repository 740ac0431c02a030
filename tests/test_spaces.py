"""Search spaces: registry, genotype grammar, derived networks, the kernels listed for profiling."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from benchmark_module import load_benchmark

from codesign.errors import CodesignError
from codesign.graph import module_kernels
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
    assert {"darts", "nb201", "mobilenet"} <= set(list_spaces())
    with pytest.raises(CodesignError, match="unknown search space 'nasnet'; known: darts, mobilenet, nb201"):
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
         "--space-arg", "layers=3", "--input-shape", "1,3,8,8", "--schedule", "untuned", "--repeats", "1",
         "--min-repeat-ms", "0", "--db", str(tmp_path / "p.sqlite")],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert " 0 failed" in out.stdout


def test_profile_cli_space_errors(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "codesign.cli", "profile", "--space", "darts", "--space-arg", "width=4",
         "--db", str(tmp_path / "p.sqlite")], capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 2 and "--space-arg" in out.stderr and "Traceback" not in out.stderr


# --- every space: the SearchSpace interface ---------------------------------------------------

SMALL = {
    "darts": dict(c=4, layers=3, input_shape=(1, 3, 16, 16)),
    "nb201": dict(c=4, cells=1, input_shape=(1, 3, 16, 16)),
    "mobilenet": dict(input_shape=(1, 3, 16, 16)),
}
NB201_BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_space_genotypes_round_trip_and_stay_valid(name):
    space = create_space(name, **SMALL[name])
    rng = random.Random(3)
    for _ in range(30):
        g = space.sample(rng)
        choices = space.parse(g)
        assert space.valid(choices) and space.format(choices) == g
        child = space.mutate(choices, rng)
        assert space.valid(child) and child != choices


@pytest.mark.parametrize("name", sorted(SMALL))
def test_supernet_soft_and_single_path_match_the_derived_network_shapes(name):
    torch.manual_seed(0)
    space = create_space(name, **SMALL[name])
    ds = space.decisions()
    net = space.supernet()
    x = torch.randn(2, 3, 16, 16)
    w = [torch.softmax(torch.randn(len(d.options)), 0).requires_grad_() for d in ds]
    net(x, w).sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in w)
    # one-hot weights on one path == the derived network with the same modules' outputs shape
    rng = random.Random(0)
    choices = space.random_choices(rng)
    onehot = [torch.nn.functional.one_hot(torch.tensor(k), len(d.options)).float() for k, d in zip(choices, ds)]
    assert net(x, onehot, choices).shape == space.build(space.format(choices))(x).shape == (2, 10)


def test_single_path_equals_soft_mix_with_one_hot_weights():
    """With one-hot weights, running every candidate and running only the chosen one agree."""
    torch.manual_seed(0)
    space = create_space("nb201", **SMALL["nb201"])
    net = space.supernet().eval()
    choices = space.parse(NB201_BEST)
    onehot = [torch.nn.functional.one_hot(torch.tensor(k), 5).double() for k in choices]
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    net = net.double()
    torch.testing.assert_close(net(x, onehot), net(x, onehot, choices))


def test_nb201_reads_the_benchmarks_strings():
    space = create_space("nb201")
    assert space.canonical(NB201_BEST) == NB201_BEST
    assert [space.decisions()[i].options[k] for i, k in enumerate(space.parse(NB201_BEST))][:3] == [
        "nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3"]
    for bad, msg in [("nor_conv_3x3~0", "must look like"), (NB201_BEST.replace("~2", "~1"), "must read"),
                     (NB201_BEST.replace("skip_connect", "conv_5x5"), "unknown op 'conv_5x5'"),
                     ("|none~0|+|none~0|none~1|", "3 items")]:
        with pytest.raises(CodesignError, match=msg):
            space.parse(bad)


def test_mobilenet_space_config_and_skip_rules(tmp_path):
    space = create_space("mobilenet", input_shape=(1, 3, 32, 32))
    ds = space.decisions()
    # the first layer of a stage changes width or stride: no skip there
    assert "skip" not in ds[1].options and "skip" in ds[2].options
    assert {"k7_e6", "k3_e1_g2", "k5_e1_g2"} <= set(ds[0].options)
    fbnet = create_space("mobilenet", config="fbnet")
    assert len(fbnet.decisions()) == 22 and fbnet.input_shape == (1, 3, 224, 224)
    with pytest.raises(CodesignError, match="layer 1: 'skip' is not an option here"):
        space.parse(",".join(["skip"] * 2 + ["k3_e1"] * (len(ds) - 2)))
    bad = tmp_path / "v2.yaml"
    bad.write_text("format_version: 2\nstages: []\n")
    with pytest.raises(CodesignError, match="format_version 2 is not supported"):
        create_space("mobilenet", config=str(bad))
    with pytest.raises(CodesignError, match="shipped: fbnet, mobilenet-small"):
        create_space("mobilenet", config="nope")
    with pytest.raises(CodesignError, match="k<kernel>_e<expansion>"):
        create_space("mobilenet", config={"format_version": 1, "stem": {"channels": 8}, "stages": [
            {"n": 1, "c": 8, "s": 1}], "options": ["conv3"]})


@pytest.mark.parametrize("name", ["nb201", "mobilenet"])
def test_option_kernels_and_listed_kernels_cover_derived_networks(name):
    space = create_space(name, **{**SMALL[name], "input_shape": (1, 3, 8, 8)})
    table = space.option_kernels()
    assert len(table) == len(space.decisions())
    for row, d in zip(table, space.decisions()):
        assert len(row) == len(d.options)
        for opt, ks in zip(d.options, row):
            assert (ks == []) == (opt in ("none", "skip_connect", "skip"))
    listed = set(space.kernels())
    net = space.build(space.sample(random.Random(11)))
    ks = module_kernels(net, space.input_shape)
    # every conv of a derived network is listed in its unfused or fused form
    convs = {(k.input_shape, k.attr("kernel"), k.attr("groups"), k.attr("stride")) for k in listed if k.op == "conv2d"}
    assert all((k.input_shape, k.attr("kernel"), k.attr("groups"), k.attr("stride")) in convs
               for k in ks if k.op == "conv2d")


def test_space_sizes_count_valid_networks():
    assert create_space("nb201").describe()["size"] == 5 ** 6 - 341  # cells whose output ignores the input left out
    assert create_space("darts").describe()["size"] == pytest.approx((180 * 49 ** 4) ** 2)  # ~1.1e18


def test_nb201_cells_whose_output_ignores_the_input_are_not_networks_of_the_space():
    """Their output is a constant: sampling, mutation, the extremes and repair never give one."""
    from codesign.search.budgets import Budget, repair
    from codesign.search.costs import CostTable
    from codesign.spaces.nb201 import connected

    space = create_space("nb201", c=2, cells=1, input_shape=(1, 1, 8, 8))
    dead = space.parse("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")  # 0->1, 2->3: no path
    live = space.parse("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert not space.valid(dead) and not connected(dead) and space.valid(live)
    with torch.no_grad():
        net = space.build(space.format(dead)).eval()
        out = net(torch.randn(4, 1, 8, 8))
    assert torch.equal(out, out[:1].expand_as(out))  # why: the same output for every input
    rng = random.Random(0)
    cells = [space.random_choices(rng) for _ in range(500)]
    assert all(space.valid(c) for c in cells)
    assert all(space.valid(space.mutate(c, rng)) for c in cells[:100])
    lat = [np.array([0.0, 0.0, 1.0, 3.0, 0.5])] * 6  # none and skip cost nothing
    assert space.cheapest(lat) == live and space.costliest(lat) == [3] * 6
    table = CostTable("nb201", "test", "-", {"latency_ms": lat}, {"latency_ms": 0.0}, [1.0] * 6)
    uniform = [np.full(5, 0.2)] * 6
    fixed, changes = repair(space, table, dead, uniform, [Budget("latency_ms", "100", 100.0)])
    assert space.valid(fixed) and changes == 1


# --- benchmarks/nb201_public.py: the public NB201 accuracy table ---------------------------------

def _public_module():
    return load_benchmark("nb201_public")


def test_the_public_nb201_table_is_read_whole_and_judges_cells_among_those_under_the_budget(tmp_path):
    import itertools

    pub = _public_module()
    space = create_space("nb201", c=4, cells=1)
    cells = [space.format(list(c)) for c in itertools.product(range(5), repeat=6)]
    acc = {g: 10.0 + (i % 900) / 10 for i, g in enumerate(cells)}  # any accuracies in percent
    lines = ["ArchitectureString,CIFAR10TestAccuracy200Epochs"] + [f"{g},{a}" for g, a in acc.items()]
    good = tmp_path / "t.csv"
    good.write_text("\n".join(lines) + "\n")
    table = pub.read_table(good, space)
    assert table == acc
    frac = tmp_path / "f.csv"  # fractions are read as percent
    frac.write_text("arch,cifar10\n" + "\n".join(f"{g},{a / 100}" for g, a in acc.items()) + "\n")
    assert pub.read_table(frac, space) == pytest.approx(acc)
    # the percentile counts connected cells under the budget on the cost table, the cell included
    from codesign.search.costs import CostTable

    table_costs = CostTable("nb201", "d", "untuned", {"latency_ms": [np.array([0.0, 0.0, 1.0, 3.0, 1.0])] * 6},
                            {"latency_ms": 0.0}, scale=[1.0] * 6)
    feasible = pub.feasible_accuracies(table, space, table_costs, 2.0)
    n = sum(space.valid(list(c)) and sum(np.array([0, 0, 1, 3, 1])[list(c)]) <= 2.0
            for c in itertools.product(range(5), repeat=6))
    assert len(feasible) == n and list(feasible) == sorted(feasible)
    top = max((g for g in cells if table_costs.of(space.parse(g), "latency_ms") <= 2.0 and space.valid(space.parse(g))),
              key=lambda g: table[g])
    assert pub.judge(table, feasible, top)["public_percentile"] == 100.0
    for text, message in [
        ("a,b\n1,2\n", "needs a cell column"),
        (lines[0] + "\n" + lines[1] + "\n", "1 cells, the space has 15625"),
        ("\n".join(lines + [lines[1]]) + "\n", "appears twice"),
        ("\n".join(lines[:2] + ["|nonx~0|+|none~0|none~1|+|none~0|none~1|none~2|,5"]) + "\n", "line 3: nb201 genotype"),
        ("\n".join(lines[:2] + [lines[2].split(",")[0] + ",250"]) + "\n", "is not a percentage"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(pub.TableError, match=message):
            pub.read_table(bad, space)
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x01" * 8)
    with pytest.raises(pub.TableError, match="not a text CSV"):
        pub.read_table(tmp_path / "bin.csv", space)
    with pytest.raises(pub.TableError, match="no such file"):
        pub.read_table(tmp_path / "none.csv", space)


def test_a_networks_kernels_leave_torchs_generator_as_they_found_it():
    """A search looks at designs whole between its own seeded draws: exporting a network to find
    its kernels must not move torch's global generator (nor build the network again once cached)."""
    space = create_space("nb201", input_shape=(1, 1, 8, 8), c=2, cells=1)
    g = space.format(space.random_choices(random.Random(3)))
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    first = space.network_kernels(g)
    assert torch.equal(torch.random.get_rng_state(), before)
    space.build = None  # a cached network is not built again
    assert space.network_kernels(g) == first
