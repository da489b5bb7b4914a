"""What a study shows while it runs: a line per stage with its elapsed time, tqdm bars over long
loops (training epochs, curvature batches, search candidates, predictions, attack strengths)
and, at the end, a table of the headline numbers. ``quiet`` turns all of it off; errors and
warnings (e.g. a damaged cache entry) still print.

The studies ask :func:`current` for the active :class:`Progress` and pass
``progress=current().bars`` to the library; the command line installs one with :func:`use`
(a quiet one for ``--quiet``). Bars are text bars unless ipywidgets is installed (see
``bnn_jax._tqdm``), so notebooks never get tqdm's IProgress warning.

Example:
  >>> with use(Progress(quiet=False)):
  ...     with current().stage("fit family"):
  ...         for member in current().bar(members, desc="members"):
  ...             ...
  ...     current().table([{"method": "map", "accuracy": 0.91}])
"""

import contextlib
import contextvars
import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from bnn_jax._tqdm import tqdm

__all__ = ["Progress", "current", "use"]


class Progress:
    """Stage lines, bars and tables on ``file`` (default: standard output at the time of
    writing; bars go to standard error), or nothing at all when ``quiet``."""

    def __init__(self, *, quiet: bool = False, file=None):
        self.quiet = quiet
        self._file = file

    @property
    def bars(self) -> bool:
        """Whether library functions should show their bars (their ``progress`` argument)."""
        return not self.quiet

    def print(self, *lines: str) -> None:
        """Write ``lines`` (between bar redraws), unless quiet."""
        if self.quiet:
            return
        for line in lines:
            tqdm.write(line, file=self._file or sys.stdout)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Print ``"<name>: <wall> s (CPU <cpu> s)"`` when the enclosed work finishes: the
        elapsed wall time and this process's CPU time (``time.process_time``, all its threads;
        on a loaded machine the wall time says little). Nothing if it raises: the error speaks
        for itself."""
        start, cpu = time.perf_counter(), time.process_time()
        yield
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        self.print(f"{name}: {wall:.1f} s (CPU {cpu:.1f} s)")

    def bar(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str):
        """A tqdm bar over ``iterable`` (or updated by hand up to ``total``); it disappears when
        done and is disabled when quiet."""
        return tqdm(iterable, total=total, desc=desc, disable=self.quiet, leave=False)

    def table(self, rows: Sequence[Mapping[str, Any]], *, digits: int = 3) -> None:
        """Print ``rows`` (``{column: value}``; columns in order of first appearance) as an
        aligned text table; floats with ``digits`` decimals, missing or undefined as ``-``."""
        if self.quiet or not rows:
            return
        columns = list(dict.fromkeys(key for row in rows for key in row))
        cells = [columns] + [[_cell(row.get(c), digits) for c in columns] for row in rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
        self.print(
            *(
                "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                for line in cells
            )
        )


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_CURRENT: contextvars.ContextVar[Progress] = contextvars.ContextVar("progress")


def current() -> Progress:
    """The :class:`Progress` installed by the innermost :func:`use` (a default, not quiet, one
    outside of any)."""
    return _CURRENT.get(_DEFAULT)


@contextlib.contextmanager
def use(progress: Progress) -> Iterator[Progress]:
    """Make ``progress`` the :func:`current` one inside the ``with`` block."""
    token = _CURRENT.set(progress)
    try:
        yield progress
    finally:
        _CURRENT.reset(token)


_DEFAULT = Progress()
