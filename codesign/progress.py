"""Progress of long work (profiling, tuning, searching, training, measuring), one helper for all.

On a terminal a tqdm bar redraws in place. In a log (stderr is not a terminal: CI, ``nohup``, a
cluster job's output file) every update is one plain line instead, so a log never fills with
carriage-return redraws: every update by default (one line per epoch), or at most one line per
``every_s`` seconds besides the first and the last (hundreds of kernels). Disabled (``--quiet``),
nothing is printed.

    from codesign import progress

    with progress.bar(30, "search darts", unit="epoch") as bar:
        for epoch in range(30):
            ...
            bar.update(1, acc="0.61", lat="0.132")
    progress.say("measuring model.onnx on cpu-local")

A plain line reads ``search darts: 2/30 epochs (7%), 12 s elapsed, ~2.8 min left; acc=0.61 lat=0.132``.
"""

from __future__ import annotations

import io
import sys
import time

_open_bars: list = []  # tqdm bars on the terminal: say() writes above them


def is_terminal(stream=None) -> bool:
    """Whether ``stream`` (default stderr) is a terminal a bar can redraw on: a TTY that is not 0
    columns wide (a pseudo-terminal without a size, where tqdm would draw nothing, gets lines)."""
    import os

    stream = sys.stderr if stream is None else stream
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):  # no descriptor: trust isatty
        return True


def say(msg: str, enabled: bool = True, stream=None) -> None:
    """One line on stderr (above any open bar), unless disabled."""
    if not enabled:
        return
    stream = sys.stderr if stream is None else stream
    if _open_bars:
        from tqdm import tqdm

        tqdm.write(msg, file=stream)
    else:
        print(msg, file=stream, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Bar:
    """A tqdm bar on a terminal, plain lines elsewhere; see the module docstring.

    Args:
        total: the count at completion (None: unknown, no percentage or time left).
        desc: what is being done, e.g. ``"profile cpu-local [untuned]"``.
        unit: the singular noun of one step (``"kernel"``; plain lines add an ``s``).
        enabled: False prints nothing at all.
        every_s: plain lines at most this often (0: every update).
        leave: keep the finished bar on the terminal.
        stream: where to write (default stderr).
        initial: steps done before (a resumed search); the time left is estimated from the rest.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", enabled: bool = True, every_s: float = 0.0,
                 leave: bool = True, stream=None, initial: int = 0):
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled, self.every_s = enabled, every_s
        self.stream = sys.stderr if stream is None else stream
        self.n = self._n0 = initial
        self.postfix: dict[str, str] = {}
        self._tqdm = None
        self._t0 = time.monotonic()
        self._printed_n = None
        self._printed_t = self._t0
        if not enabled:
            return
        if is_terminal(self.stream):
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True, leave=leave,
                             initial=initial)
            _open_bars.append(self._tqdm)
        else:
            self._line()

    def update(self, n: int = 1, **postfix) -> None:
        """``n`` more steps done; ``postfix`` (name=value) is shown after the count."""
        if not self.enabled:
            return
        if postfix:
            self.postfix.update({k: str(v) for k, v in postfix.items()})
        if n == 0 and not postfix:
            return
        self.n += n
        if self._tqdm is not None:
            if postfix:
                self._tqdm.set_postfix(self.postfix, refresh=False)
            self._tqdm.update(n)
            return
        now = time.monotonic()
        done = self.total is not None and self.n >= self.total
        if done or self.every_s <= 0 or now - self._printed_t >= self.every_s:
            self._line()

    def set_postfix(self, **postfix) -> None:
        """Change what is shown after the count (printed with the next update in a log)."""
        self.update(0, **postfix)

    def _line(self) -> None:
        now = time.monotonic()
        units = self.unit if self.unit.endswith("s") else self.unit + "s"
        if self.total is not None:
            text = f"{self.desc}: {self.n}/{self.total} {units}"
            if self.total > 0:
                text += f" ({100 * self.n / self.total:.0f}%)"
        else:
            text = f"{self.desc}: {self.n} {units}"
        elapsed = now - self._t0
        if self.n > self._n0:
            text += f", {_duration(elapsed)} elapsed"
            if self.total is not None and self.n < self.total:
                left = elapsed / (self.n - self._n0) * (self.total - self.n)
                text += f", ~{_duration(left)} left"
        if self.postfix:
            text += "; " + " ".join(f"{k}={v}" for k, v in self.postfix.items())
        print(text, file=self.stream, flush=True)
        self._printed_n, self._printed_t = self.n, now

    def close(self) -> None:
        """Finish the bar (a log gets the last count if it was not printed yet)."""
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.close()
            if self._tqdm in _open_bars:
                _open_bars.remove(self._tqdm)
            self._tqdm = None
        elif self._printed_n != self.n:
            self._line()
        self.enabled = False

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True, every_s: float = 0.0,
        leave: bool = True, stream=None, initial: int = 0) -> Bar:
    """A :class:`Bar` (a context manager); see the module docstring."""
    return Bar(total, desc, unit, enabled, every_s, leave, stream, initial)
