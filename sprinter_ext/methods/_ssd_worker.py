"""Where ssd's draft work runs: inline (``threaded=False``) or on a worker thread (``threaded=True``).

Threaded, each Decoder's draft lane gets one persistent thread. The main thread runs the target
(verification) while the worker drafts and speculates; torch releases the GIL inside its ops,
so on CPU the two really run at once. The worker runs one intra-op thread (its own setting;
on CUDA its own stream). The caller's thread count and CPU affinity are left as found; only
``pin=True`` changes them, for the length of a round: each side pinned to its own cores (when
there are at least two) with one intra-op thread per core, and everything restored when the
round ends, also when it raises. A job's exception is re-raised in the caller; the thread ends
when its lane is garbage-collected (or at interpreter exit: it is a daemon).

Jobs never outlive a round: the round waits for (or aborts) its speculation before it returns,
also when verification raises, so the draft lane is never touched by two threads at once.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import torch

ABORT = ("abort",)  # an outcome no key equals: abandon the speculation


class Job:
    """One unit of draft work; `outcome` is the verification outcome once known."""

    def __init__(self, fn: Callable[[Job], object]):
        self.fn = fn
        self.outcome = None
        self.result = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def abandon(self, key) -> bool:
        """True when the outcome is known and is not `key` (polled between draft steps)."""
        o = self.outcome
        return o is not None and o != key

    def run(self) -> None:
        try:
            self.result = self.fn(self)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            self.error = e
        finally:
            self.fn = None  # drop references to the session and lane
            self.done.set()

    def wait(self):
        self.done.wait()
        if self.error is not None:
            err, self.error = self.error, None
            raise err
        return self.result


class Inline:
    """The reference engine: draft work runs in the caller, to completion, in order."""

    threaded = False

    def submit(self, fn: Callable[[Job], object]) -> Job:
        job = Job(fn)
        job.run()
        return job

    def call(self, fn: Callable[[Job], object]):
        return self.submit(fn).wait()

    @contextlib.contextmanager
    def scope(self, pin: bool) -> Iterator[None]:
        yield


def _split_cores() -> tuple[set[int], set[int]] | None:
    """(main cores, draft cores) from the calling thread's affinity; None on < 2 cores."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        return None
    draft = {max(allowed)}
    return allowed - draft, draft


def _serve(jobs: queue.SimpleQueue, device: torch.device, ready: threading.Event) -> None:
    # NOTE: holds only the queue, never the Worker or a lane, so a Decoder can be collected.
    # torch.set_num_threads is per thread under OpenMP (the caller keeps its own count) but it
    # also stores the process-wide default that threads started later read; Worker.__init__
    # waits for this line and puts that default back (_restore_default).
    torch.set_num_threads(1)
    home = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    ready.set()
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    while True:
        item = jobs.get()
        if item is None:
            return
        job, cores = item
        want = cores if cores is not None else home  # unpinned: back to where the thread started
        if want is not None and os.sched_getaffinity(0) != want:
            os.sched_setaffinity(0, want)  # pid 0 = this thread on Linux
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            job.run()
            if stream is not None:
                stream.synchronize()
        del job, item


class Worker:
    """A persistent draft thread (one per draft lane); see the module docstring."""

    threaded = True

    def __init__(self, device: torch.device):
        self.device = device
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._cores: set[int] | None = None
        ready = threading.Event()
        before = torch.get_num_threads()
        self._thread = threading.Thread(target=_serve, args=(self._jobs, device, ready), name="sprinter-ssd-draft",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        ready.wait()
        _restore_default(before)

    def submit(self, fn: Callable[[Job], object]) -> Job:
        if not self._thread.is_alive():
            raise RuntimeError("the ssd draft worker has stopped")
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # the worker reads what we wrote
        job = Job(fn)
        self._jobs.put((job, self._cores))
        return job

    def call(self, fn: Callable[[Job], object]):
        return self.submit(fn).wait()

    @contextlib.contextmanager
    def scope(self, pin: bool) -> Iterator[None]:
        """Run a round; with `pin`, the main thread on its own cores and threads, restored after."""
        split = _split_cores() if pin else None
        if split is None:  # NOTE: unpinned, the caller's thread count and affinity are not touched
            yield
            return
        prev_threads = torch.get_num_threads()
        prev_aff = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, split[0])
            self._cores = split[1]
            torch.set_num_threads(max(1, min(prev_threads, len(split[0]))))
            yield
        finally:
            self._cores = None
            _restore_default(prev_threads)
            os.sched_setaffinity(0, prev_aff)

    def close(self) -> None:
        self._jobs.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)


def _restore_default(threads: int) -> None:
    """Set this thread's intra-op count, and with it torch's process-wide default, to `threads`."""
    torch.set_num_threads(threads)


_WORKERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def worker_for(lane) -> Worker:
    """The draft thread of `lane` (started on first use, stopped when the lane is collected)."""
    with _LOCK:
        w = _WORKERS.get(lane)
        if w is None or not w._thread.is_alive():
            w = Worker(lane.runner.device)
            _WORKERS[lane] = w
            weakref.finalize(lane, w.close)
        return w


def finish(job: Job, outcome, stop_early: bool) -> tuple[object, float]:
    """Tell the job the outcome (so it can stop early) and wait: (result, seconds waited)."""
    if stop_early or outcome is ABORT:
        job.outcome = outcome
    t0 = time.perf_counter()
    result = job.wait()
    return result, time.perf_counter() - t0


def abandon(job: Job) -> None:
    """Stop a job and wait for it, dropping its result or error (the caller is raising)."""
    job.outcome = ABORT
    job.done.wait()
    job.error = job.result = None
