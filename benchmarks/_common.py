"""Shared helpers of the benchmarks: statistics, profiles, the machine, quiet logs.

Every benchmark compares tb-retune with what a person would use instead, in
this one process, and reports the *ratio* of the two. On a shared 2-core
machine absolute times drift by tens of percent from minute to minute; a ratio
of runs interleaved with each other (A B B A ...) cancels most of that drift.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import logging
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def quiet() -> None:
    """Silences TensorFlow's and werkzeug's chatter before they are imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    for name in ("werkzeug", "tensorboard", "absl", "tb_retune", "watchdog"):
        logging.getLogger(name).setLevel(logging.ERROR)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else math.nan


def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation, as numpy's default."""
    if not xs:
        return math.nan
    s = sorted(xs)
    k = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return float(s[lo] + (s[hi] - s[lo]) * (k - lo))


def pair_ratios(ours: Sequence[float], theirs: Sequence[float]) -> list[float]:
    """Per-pair ratios of runs taken side by side."""
    return [a / b for a, b in zip(ours, theirs, strict=True) if b > 0]


def spread(xs: Sequence[float]) -> str:
    """``min..max`` of a sample, for the table."""
    return f"{min(xs):.3g}..{max(xs):.3g}" if xs else "-"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds that ``fn()`` took, and what it returned."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(n: int, kinds: Sequence[str]) -> Iterator[tuple[int, str]]:
    """``(round, kind)`` in an order that rotates the kinds each round.

    With two kinds this is A B, B A, A B, ...: neither always runs first (the
    first run of a pair meets a colder cache, or a busier neighbour).
    """
    k = len(kinds)
    for r in range(n):
        order = [kinds[(i + r) % k] for i in range(k)]
        if r % 2 == 1:
            order.reverse()
        for kind in order:
            yield r, kind


def _where(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename == "~":
        return func  # a builtin, e.g. <built-in method posix.fsync>
    where = f"{filename}:{line}({func})"
    for marker in ("site-packages/", "/work/main/", "/lib/python3."):
        if marker in where:
            where = where.split(marker, 1)[1]
    return where


class Profile:
    """cProfile, switched on only around what is profiled: a call, or chosen methods of an object.

    So the summary holds our code and what it calls, not the training steps
    around it (nor an import).
    """

    def __init__(self) -> None:
        self._prof = cProfile.Profile()

    def run(self, fn: Callable[[], Any]) -> Any:
        self._prof.enable()
        try:
            return fn()
        finally:
            self._prof.disable()

    def wrap(self, obj: Any, names: Sequence[str]) -> None:
        """Profiles every later call of ``obj.<name>`` (an instance attribute shadows the method)."""
        for name in names:
            inner = getattr(obj, name)

            def wrapper(*args: Any, _inner: Callable[..., Any] = inner, **kwargs: Any) -> Any:
                return self.run(lambda: _inner(*args, **kwargs))

            setattr(obj, name, wrapper)

    def top(self, limit: int = 12) -> dict[str, list[dict[str, Any]]]:
        """The top ``limit`` functions by cumulative time (the call chain) and by own
        time (the leaves that really cost: an fsync, a CRC, a copy)."""
        stats: dict[Any, Any] = pstats.Stats(self._prof, stream=io.StringIO()).stats  # type: ignore[attr-defined]
        rows = [{"function": _where(k), "calls": int(v[1]), "cum_ms": round(v[3] * 1000, 2),
                 "own_ms": round(v[2] * 1000, 2)}
                for k, v in stats.items() if "Profile.run" not in _where(k) and "(wrapper)" not in _where(k)
                and "<lambda>" not in _where(k) and "_lsprof" not in _where(k)]
        return {
            "cumulative": sorted(rows, key=lambda r: -r["cum_ms"])[:limit],
            "own": sorted(rows, key=lambda r: -r["own_ms"])[:limit],
        }


def profile_top(fn: Callable[[], Any], *, limit: int = 12) -> dict[str, list[dict[str, Any]]]:
    """Runs ``fn`` once under cProfile; see :meth:`Profile.top`."""
    prof = Profile()
    prof.run(fn)
    return prof.top(limit)


def machine() -> dict[str, Any]:
    """What the numbers were taken on."""
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as f:
        info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    from importlib import metadata

    # Distribution names: TensorFlow may be installed as tensorflow-cpu.
    for mod, dists in (("tensorflow", ("tensorflow", "tensorflow-cpu")), ("keras", ("keras",)),
                       ("tensorboard", ("tensorboard",)), ("numpy", ("numpy",)),
                       ("watchdog", ("watchdog",)), ("playwright", ("playwright",))):
        version = getattr(sys.modules.get(mod), "__version__", None)
        for dist in dists:
            if version is None:
                with contextlib.suppress(metadata.PackageNotFoundError):
                    version = metadata.version(dist)
        info[mod] = version
    return info


def write_result(path: str | None, result: dict[str, Any]) -> None:
    """A benchmark's ``--json FILE``: its result with the machine it ran on."""
    if path:
        import json

        with open(path, "w") as f:
            json.dump({**result, "machine": machine()}, f, indent=1)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """Keeps one core busy for the block: a child process that spins (pure
    Python, no I/O), as another job on the machine would. Killed on the way out."""
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
    try:
        yield
    finally:
        child.kill()
        child.wait()
