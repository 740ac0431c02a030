"""Reports (HTML of real runs, opened in headless Chromium), progress output in terminals and logs,
the command that repeats a run, and `codesign doctor`."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codesign import progress
from codesign.cli import build_parser
from codesign.cli import main as cli_main
from codesign.pipeline import SearchConfig, run_search
from codesign.report import figures as F
from codesign.report import load_run, write_comparison, write_report
from codesign.spaces import create_space, list_spaces

TINY = {"c": 4, "cells": 1}
CLI = [sys.executable, "-m", "codesign.cli"]


# --- progress --------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_one_plain_line_per_step():
    log = io.StringIO()
    with progress.bar(3, "search darts", unit="epoch", stream=log) as bar:
        for i in range(3):
            bar.update(1, acc=f"0.{i}")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0] == "search darts: 0/3 epochs (0%)"
    assert re.fullmatch(r"search darts: 1/3 epochs \(33%\), \d+ s elapsed, ~\d+ s left; acc=0\.0", lines[1])
    assert re.fullmatch(r"search darts: 3/3 epochs \(100%\), \d+ s elapsed; acc=0\.2", lines[3])
    assert len(lines) == 4  # closing after the last update adds nothing


def test_a_log_gets_a_line_every_every_s_seconds_and_the_last_one(monkeypatch):
    clock = iter(float(t) for t in range(1000))
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    log = io.StringIO()
    with progress.bar(100, "profile cpu-local [untuned]", unit="kernel", every_s=10.0, stream=log) as bar:
        for _ in range(100):
            bar.update(1, failed=0)
    lines = log.getvalue().splitlines()
    assert 10 <= len(lines) <= 12, lines
    assert lines[-1].startswith("profile cpu-local [untuned]: 100/100 kernels (100%)")


def test_unknown_totals_and_resumed_counts():
    log = io.StringIO()
    bar = progress.bar(None, "search random", unit="candidate", stream=log)
    bar.update(1, best="0.9")
    bar.close()
    assert log.getvalue().splitlines()[-1].startswith("search random: 1 candidates")
    log = io.StringIO()
    with progress.bar(4, "search gdas", unit="epoch", stream=log, initial=3) as bar:
        bar.update(1)
    assert log.getvalue().splitlines()[0] == "search gdas: 3/4 epochs (75%)"


def test_a_terminal_gets_a_redrawn_bar_and_disabled_prints_nothing():
    tty = Terminal()
    with progress.bar(3, "search darts", unit="epoch", stream=tty) as bar:
        bar.update(1)
        progress.say("a line above the bar", stream=tty)
        bar.update(2, acc="0.5")
    out = tty.getvalue()
    assert "\r" in out and "3/3" in out and "a line above the bar\n" in out
    quiet = Terminal()
    with progress.bar(3, "x", stream=quiet, enabled=False) as bar:
        bar.update(3)
    progress.say("nothing", enabled=False, stream=quiet)
    assert quiet.getvalue() == ""


# --- pieces of the report -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=30))
def test_pareto_front_is_exactly_the_non_dominated_points(points):
    def dominated(p):
        return any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)

    expected = sorted({p for p in points if not dominated(p)})
    assert F.pareto_front([(float(c), float(a)) for c, a in points]) == [(float(c), float(a)) for c, a in expected]


def test_kernel_labels_name_op_window_shape_and_fusion():
    assert F.kernel_label('conv2d|1x4x8x8|activation="relu",bias=True,kernel=3,out_channels=8,stride=2') == \
        "conv2d 3x3/2 4×8×8→8 +relu"
    assert F.kernel_label("conv2d|1x8x4x4|groups=8,kernel=3,out_channels=8,residual=True") == \
        "conv2d 3x3 depthwise 8×4×4→8 +add"
    assert F.kernel_label("dense|1x16|out_features=10") == "dense 16→10"
    assert F.kernel_label("not a key") == "not a key"


@pytest.mark.parametrize("name", list_spaces())
def test_every_space_draws_its_networks(name):
    space = create_space(name)
    genotype = space.sample(random.Random(1))
    graphs = space.graphs(genotype)
    assert graphs
    for g in graphs:
        assert all(0 <= a < b < len(g.nodes) for a, b, _ in g.edges), g  # forward edges between real nodes
    assert F.svg(F.network_figure(graphs)).lstrip().startswith("<?xml")


def test_cell_graphs_follow_the_genotype():
    nb = create_space("nb201")
    g = nb.graphs("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")[0]
    assert sorted(g.edges) == [(0, 1, "nor_conv_3x3"), (0, 3, "avg_pool_3x3"), (1, 2, "skip_connect"),
                               (2, 3, "nor_conv_1x1")]
    darts = create_space("darts")
    normal, reduce = darts.graphs(darts.sample(random.Random(0)))
    for cell in (normal, reduce):
        ops = [e for e in cell.edges if e[2]]
        assert len(ops) == 8 and sorted({b for _, b, _ in ops}) == [2, 3, 4, 5]
        assert [e for e in cell.edges if not e[2]] == [(n, 6, "") for n in range(2, 6)]


def test_figures_label_their_axes_with_units():
    epochs = [{"epoch": e, "train_accuracy": 0.1 * e, "val_accuracy": 0.1 * e if e > 1 else None,
               "expected": {"latency_ms": 1.0 / e, "energy_mj": 2.0 / e}, "derived_cost": {"latency_ms": 0.9 / e},
               "multipliers": {"latency_ms": 0.1 * e}, "tau": 5.0 / e} for e in (1, 2, 3)]
    fig = F.trajectory_figure(epochs, {"latency_ms": 0.5})
    labels = {ax.get_ylabel() for ax in fig.axes if ax.get_visible()}
    assert labels == {"accuracy (%)", "latency (ms)", "energy (mJ)", "multiplier (per unit of log budget)",
                      "tau (dimensionless)"}
    designs = {"co-search": {"latency_ms": 1.0, "energy_mj": 2.0, "edp_mj_ms": 2.0, "area_mm2": 4.0,
                             "test_accuracy": 0.5},
               "sequential": {"latency_ms": 1.5, "energy_mj": 1.0, "edp_mj_ms": 1.5, "area_mm2": 3.0,
                              "test_accuracy": 0.4}}
    fig = F.designs_figure(designs, {"area_mm2": 8.0})
    assert [ax.get_ylabel() for ax in fig.axes] == ["test accuracy (%)", "latency (ms)", "energy (mJ)",
                                                    "energy-delay product (mJ·ms)", "area (mm²)"]


def test_the_recorded_command_repeats_the_config(monkeypatch):
    cfg = SearchConfig(space="mobilenet", space_args={"config": "fbnet", "c": 8}, strategy="gdas", epochs=3,
                       latency_ms="0.4x", energy_mj="2.5", tau_min=0.25, measure=False, compare="random",
                       data_dir="/data/cifar 10", seed=7)
    argv = shlex.split(cfg.command_line())
    assert argv[:2] == ["codesign", "search"]
    seen = {}

    def fake_run_search(c, **kw):
        seen["cfg"] = c
        raise SystemExit(0)

    monkeypatch.setattr("codesign.pipeline.run_search", fake_run_search)
    args = build_parser().parse_args(argv[1:])
    with pytest.raises(SystemExit):
        args.func(args)
    assert seen["cfg"] == cfg
    assert "through the Python API: profile_repeats=2" in SearchConfig(profile_repeats=2).command_line()


# --- bad input ----------------------------------------------------------------------------------------


def _run_dir(tmp_path, config=None, name="run"):
    d = tmp_path / name
    d.mkdir()
    body = config if config is not None else json.dumps(
        {"format": "codesign-search-config", "format_version": 1, "config": SearchConfig().to_dict()})
    (d / "config.json").write_text(body)
    return d


@pytest.mark.parametrize("case, message", [
    ("missing", "no such run directory"),
    ("no-config", "is not a codesign run directory (no config.json)"),
    ("damaged-config", "config.json is not valid JSON"),
    ("foreign-config", "config.json is not a codesign run config"),
    ("damaged-results", "results.json is damaged"),
    ("foreign-results", "is not a codesign results file"),
    ("damaged-log", "log.jsonl:1 is damaged"),
    ("two-runs", "add --compare"),
    ("compare-one", "--compare needs at least two run directories"),
    ("compare-twice", "is given twice"),
    ("out-dir-missing", "no directory"),
])
def test_bad_input_is_one_line_and_writes_nothing(case, message, tmp_path, capsys):
    argv = ["report"]
    if case == "missing":
        argv.append(str(tmp_path / "nope"))
    elif case == "no-config":
        (tmp_path / "empty").mkdir()
        argv.append(str(tmp_path / "empty"))
    elif case == "damaged-config":
        argv.append(str(_run_dir(tmp_path, '{"format": "codesign-search-con')))
    elif case == "foreign-config":
        argv.append(str(_run_dir(tmp_path, json.dumps({"format": "something-else", "config": {}}))))
    elif case in ("damaged-results", "foreign-results", "damaged-log"):
        d = _run_dir(tmp_path)
        if case == "damaged-results":
            (d / "results.json").write_text("{")
        elif case == "foreign-results":
            (d / "results.json").write_text('{"format": "other"}')
        else:
            (d / "log.jsonl").write_text('{"epoch": 1, "trunc\n{"epoch": 2}\n')
        argv.append(str(d))
    elif case == "two-runs":
        argv += [str(_run_dir(tmp_path, name="a")), str(_run_dir(tmp_path, name="b"))]
    elif case == "compare-one":
        argv += ["--compare", str(_run_dir(tmp_path))]
    elif case == "compare-twice":
        d = _run_dir(tmp_path)
        argv += ["--compare", str(d), str(d)]
    elif case == "out-dir-missing":
        argv += [str(_run_dir(tmp_path)), "--out", str(tmp_path / "no" / "r.html")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.rglob("*.html"))


def test_a_log_line_cut_by_a_kill_is_left_out(tmp_path):
    d = _run_dir(tmp_path)
    (d / "log.jsonl").write_text('{"epoch": 1, "train_accuracy": 0.5}\n{"epoch": 2, "train_acc')
    assert [r["epoch"] for r in load_run(d).epochs()] == [1]
    report = write_report(d)
    html = report.path.read_text()
    assert report.problems == [] and "has not finished" in html and "--resume" in html


# --- real runs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tvm_run(tmp_path_factory):
    """A tiny real GDAS search on a TVM-profiled CPU with --compare random (report written at the end)."""
    root = tmp_path_factory.mktemp("report-tvm")
    cfg = SearchConfig(space_args=TINY, strategy="gdas", epochs=2, warmup_epochs=1, train_epochs=1,
                       latency_ms="0.6x", compare="random", db=str(root / "p.sqlite"), profile_repeats=1,
                       profile_min_repeat_ms=1.0, schedule="untuned")  # the tuned default tunes for minutes
    return run_search(cfg, run_dir=root / "run", quiet=True), root / "run"


@pytest.fixture(scope="module")
def cosearch_log(tmp_path_factory):
    """A tiny real co-search with --compare sequential, run as a command whose stderr is a log file."""
    root = tmp_path_factory.mktemp("report-cosearch")
    argv = CLI + ["search", "--strategy", "darts", "--space-arg", "c=4", "--space-arg", "cells=1", "--epochs", "2",
                  "--warmup-epochs", "1",
                  "--train-epochs", "1", "--hw-space", "eyeriss-sweep", "--area-mm2", "8", "--compare", "sequential",
                  "--run-dir", str(root / "run")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return proc, root / "run"


def _sections(html: str) -> set[str]:
    return set(re.findall(r'<h2 id="([a-z]+)">', html))


def test_a_search_writes_its_report(tvm_run):
    results, run = tvm_run
    assert results["report"] == str(run / "report.html") and results["report_error"] is None
    assert json.loads((run / "results.json").read_text())["report"] == results["report"]
    html = (run / "report.html").read_text()
    assert _sections(html) == {"summary", "search", "network", "costs", "breakdown", "compare", "config"}
    assert "could not be drawn" not in html
    # trajectory, heatmap, cell, predicted vs measured, per-kernel, Pareto
    assert html.count('<img src="data:image/svg+xml;base64,') == 6
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # nothing fetched
    assert results["genotype"] in html and "--resume" not in html
    assert json.loads((run / "config.json").read_text())["command"].startswith("codesign search ")


def test_the_report_command_rebuilds_the_same_file(tvm_run, tmp_path, capsys):
    _, run = tvm_run
    assert cli_main(["report", str(run), "--out", str(tmp_path / "again.html"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"report": str(tmp_path / "again.html"), "figures": 6, "problems": []}
    assert (tmp_path / "again.html").read_bytes() == (run / "report.html").read_bytes()


def test_a_search_in_a_log_prints_plain_lines_and_its_report(cosearch_log):
    proc, run = cosearch_log
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    for pattern in (r"^search darts: 1/2 epochs \(50%\), .*acc=", r"^search darts: 2/2 epochs \(100%\)",
                    r"^train network: 1/1 epochs \(100%\)", r"^train sequential network: 1/1 epochs",
                    r"^measured [0-9.e-]+ ms in \d+ s$", r"^writing the report$"):
        assert re.search(pattern, proc.stderr, re.M), pattern
    assert re.search(rf"^report: +{re.escape(str(run / 'report.html'))}$", proc.stdout, re.M)
    html = (run / "report.html").read_text()
    assert _sections(html) == {"summary", "search", "network", "costs", "breakdown", "compare", "config"}
    assert "Per-layer breakdown on the accelerator" in html and "Accelerator parameters" in html
    assert "could not be drawn" not in html


def test_quiet_prints_nothing_but_the_result(cosearch_log):
    _, run = cosearch_log
    proc = subprocess.run(CLI + ["search", "--resume", str(run), "--quiet"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("genotype:") and f"report:          {run / 'report.html'}" in proc.stdout


def test_several_runs_on_one_page(tvm_run, cosearch_log, tmp_path, capsys):
    (_, a), (_, b) = tvm_run, cosearch_log
    out = tmp_path / "both.html"
    assert cli_main(["report", "--compare", str(a), str(b), "--out", str(out)]) == 0
    assert f"wrote {out} (2 figures)" in capsys.readouterr().out
    html = out.read_text()
    assert _sections(html) == {"runs", "pareto", "searches"}
    assert html.count(os.path.relpath(a / "report.html", tmp_path)) == 1  # a link to each run's own report
    report = write_comparison([a, b], tmp_path / "again.html")
    assert report.problems == [] and report.figures == 2


# --- the page in a real browser -----------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class Chromium:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, exe: str, profile: Path):
        import websocket

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "--window-size=1280,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=120, suppress_origin=True)
        self.next_id, self.events = 0, []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 120
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < deadline, "the page did not load"
            self.events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"]

    def screenshot(self, clip: dict | None = None) -> np.ndarray:
        from PIL import Image

        params = {"format": "png", "captureBeyondViewport": True}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and requests that leave the file."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console: {p.get('args')}")
            elif m == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')}")
            elif m == "Network.requestWillBeSent" and not p["request"]["url"].startswith(("file:", "data:")):
                out.append(f"network: {p['request']['url']}")
        return out

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _not_blank(pixels: np.ndarray) -> bool:
    """More than 1% of the pixels differ from the most common shade (the background)."""
    values, counts = np.unique(pixels.round(), return_counts=True)
    background = values[np.argmax(counts)]
    return float(np.mean(np.abs(pixels - background) > 8)) > 0.01


def test_reports_render_in_chromium(tvm_run, cosearch_log, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); the reports' browser test needs it")
    pytest.importorskip("websocket", reason="websocket-client drives Chromium (pip install -e '.[test]')")
    (_, a), (_, b) = tvm_run, cosearch_log
    both = write_comparison([a, b], tmp_path / "both.html").path
    browser = Chromium(exe, tmp_path / "profile")
    try:
        for page, figures in ((a / "report.html", 6), (b / "report.html", 8), (both, 2)):
            browser.open(page.resolve().as_uri())
            assert browser.problems() == [], page
            images = browser.evaluate(
                "[...document.images].map(i => { const r = i.getBoundingClientRect(); return {alt: i.alt, "
                "ok: i.complete, w: i.naturalWidth, h: i.naturalHeight, x: r.left + scrollX, y: r.top + scrollY, "
                "width: r.width, height: r.height}; })")
            assert len(images) == figures, page
            for img in images:
                assert img["ok"] and img["w"] > 0 and img["h"] > 0, img["alt"]
                shot = browser.screenshot({k: img[k] for k in ("x", "y", "width", "height")})
                assert shot.shape[0] > 50 and _not_blank(shot), f"blank figure in {page}: {img['alt']}"
            whole = browser.screenshot()
            assert _not_blank(whole), page
    finally:
        browser.close()


# --- doctor -------------------------------------------------------------------------------------------------


def test_doctor_reports_every_check_with_fixes(tmp_path, capsys):
    db = tmp_path / "p.sqlite"
    from codesign.profile import ProfileDB

    with ProfileDB(db):
        pass
    assert cli_main(["doctor", "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in out["checks"]}
    assert set(checks) == {"C++ compiler", "codesign._C", "OpenMP", "TVM", "TVM FFI pin", "onnxruntime", "Triton",
                           "GPU", "energy counters", "profile database", "tuning database", "Ray", "Chromium"}
    assert all(c["status"] in ("ok", "missing", "note") for c in checks.values())
    assert all(c["fix"] for c in checks.values() if c["status"] != "ok")
    assert checks["codesign._C"]["status"] == "ok" and checks["profile database"]["detail"].startswith(str(db))
    assert checks["TVM FFI pin"]["status"] == "ok"  # the pinned apache-tvm-ffi is what codesign installs
    assert checks["Chromium"]["status"] == ("ok" if _chromium() else "note")
    assert cli_main(["doctor", "--db", str(tmp_path / "none.sqlite")]) == 0
    screen = capsys.readouterr().out
    assert "none yet at" in screen and screen.count("\n") < 40
