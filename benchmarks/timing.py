"""Wall-clock timing shared by both sides of the benchmark (no jax or torch import here).

``measure`` runs a warm-up (compilation for jax; first-call allocations for torch), then
timed repeats, and reports their median. Repeats stop early once they took ``budget_s``
seconds (at least one timed run), so slow baselines cost one or two runs, fast cases five.
"""

import datetime
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple


class Timing(NamedTuple):
    """``median_s`` of the timed ``times_s`` (seconds), after ``warmup_s``; ``cpu_times_s``:
    this process's CPU seconds (all threads) of each timed run, robust to other processes
    taking the cores (wall time on a shared machine is not)."""

    median_s: float
    times_s: tuple[float, ...]
    warmup_s: float
    cpu_times_s: tuple[float, ...] = ()


def _identity(value: Any) -> Any:
    return value


def measure(
    fn: Callable[[], Any],
    *,
    repeats: int,
    budget_s: float,
    warmup: Callable[[], Any] | None = None,
    sync: Callable[[Any], Any] = _identity,
) -> Timing:
    """Median wall-clock seconds of ``sync(fn())`` over up to ``repeats`` runs.

    Args:
      fn: the work to time; its result is passed to ``sync`` (``jax.block_until_ready``
        for jax, so asynchronous dispatch is timed to completion).
      repeats: maximal number of timed runs (>= 1).
      budget_s: stop repeating once the timed runs took this long.
      warmup: run once before timing (default: ``fn`` itself). A cheaper call that
        exercises the same code paths (e.g. one batch) keeps slow baselines affordable.
      sync: called on each result inside the timed region.
    """
    start = time.perf_counter()
    sync((warmup or fn)())
    warmup_s = time.perf_counter() - start
    times: list[float] = []
    cpu_times: list[float] = []
    while len(times) < max(1, repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        sync(fn())
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        if sum(times) >= budget_s:
            break
    return Timing(statistics.median(times), tuple(times), warmup_s, tuple(cpu_times))


def gflops(flops: float | None, seconds: float | None) -> float | None:
    """``flops / seconds / 1e9`` (``None`` when either is unknown)."""
    if flops is None or seconds is None or not seconds > 0 or not math.isfinite(seconds):
        return None
    return flops / seconds / 1e9


def host(load_start: list[float]) -> dict[str, Any]:
    """What a result file records of the machine: date, usable cores and the load average at the
    start (``load_start``, from ``os.getloadavg()``) and now (a shared machine's timings move
    with it)."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": len(os.sched_getaffinity(0)),
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
    }
