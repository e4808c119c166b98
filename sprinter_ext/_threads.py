"""The intra-op thread count the CLI, the bench and the server run with.

The library itself never changes process-wide state inside ``generate()``: only the
entry points (``python -m sprinter_ext ...``) set torch's thread count, and only for
the duration of the command (:func:`use_threads` restores it).

Default: ``SPRINTER_EXT_THREADS`` when set, else torch's own count (:data:`DEFAULT_THREADS`
is None, ``sprinter_ext._defaults.THREADS``) for ``generate``, ``chat`` and ``serve``; the
measuring commands (``bench``, ``sprinter-sweep``, training) pin ``BENCH_THREADS`` (1).
NOTE: measured on this project's shared 2-core CPU, batch-1 decoding with torch's
default (one thread per core) collapses as soon as another process runs: each step
waits for the slowest thread at every op barrier. One thread per decoder was 1.3-4x
faster there at the same moment (README, "Threads"); on a dedicated many-core machine
pass ``--threads N`` (or set the variable) to use more.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from . import _defaults as D
from .errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["DEFAULT_THREADS", "ENV", "available_cpus", "default_threads", "resolve_threads", "use_threads"]

DEFAULT_THREADS = D.THREADS  # None: torch's own count (one per physical core), as a user's machine picks
ENV = "SPRINTER_EXT_THREADS"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """The thread count entry points use when none is given: $SPRINTER_EXT_THREADS, else
    DEFAULT_THREADS, else (None) torch's own current count."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return torch.get_num_threads() if DEFAULT_THREADS is None else DEFAULT_THREADS
    return resolve_threads(raw, source=f"${ENV}")


def resolve_threads(value, *, source: str = "threads") -> int:
    """An int >= 1 from `value`: None -> default_threads(); "all" or 0 -> every available CPU."""
    if value is None:
        return default_threads()
    if isinstance(value, str):
        v = value.strip().lower()
        if v == "all":
            return available_cpus()
        try:
            value = int(v)
        except ValueError:
            raise InvalidArgumentError(f"{source} must be a positive int or 'all', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{source} must be an int or 'all', got {type(value).__name__}")
    if value == 0:
        return available_cpus()
    if value < 0:
        raise InvalidArgumentError(f"{source} must be >= 1 (or 0/'all' for every CPU), got {value}")
    return value


@contextlib.contextmanager
def use_threads(n=None) -> Iterator[int]:
    """Run the block with torch's intra-op thread count set to `n` (resolved), then restore it."""
    n = resolve_threads(n)
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(prev)
