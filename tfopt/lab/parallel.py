"""Run the training suite's trials here, in worker processes, or on a Ray cluster: the same numbers each way.

Trials are independent and carry their own seed (``tfopt.lab.train.trial_seed``), so where and in
which order they run changes only their timings. ``run_trials(trials, workers=N)`` runs them in N
worker processes (``spawn``: fresh interpreters, each importing TensorFlow once, ~5 s, then taking
trial after trial; ``workers=1`` runs them here, one after the other). ``run_trials(trials,
ray="auto")`` sends each trial to a Ray cluster as a task of one CPU, spread over its nodes:
``"auto"`` joins the cluster that ``ray start`` runs on this machine, an address
(``"10.0.0.5:6379"``, ``"ray://head:10001"``) a remote one; an already connected session
(``ray.init(...)`` before) is used as it is. Every node needs tfopt (and the modules of your own
rules) importable: the worker processes get this process's ``sys.path`` prepended to theirs, which
is enough on one machine or a shared file system; elsewhere install them on the nodes.

Ray is an optional dependency: ``pip install "tfopt[ray]"``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from tfopt.lab import train

__all__ = ["run_trials", "default_workers"]


def default_workers() -> int:
    """The number of CPUs this process may use (its affinity mask where the platform tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def run_trials(trials: Sequence[train.Trial], workers: int | None = None, ray: str | None = None,
               on_result: Callable[[train.TrialResult], None] | None = None) -> list[train.TrialResult]:
    """Run ``trials`` and return their results in the trials' order.

    ``ray``: a cluster address (``"auto"``, ``"host:port"``, ``"ray://host:port"``) to run on Ray;
    otherwise ``workers`` processes (default: ``default_workers()``; 1 = in this process).
    ``on_result(result)`` is called as each trial finishes (in the order they finish).
    """
    trials = list(trials)
    if ray is not None:
        return _run_on_ray(trials, ray, on_result)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(trials) <= 1:
        return train.run_trials_in_process(trials, on_result)
    return _run_in_pool(trials, min(workers, len(trials)), on_result)


# --------------------------------------------------------------- processes
def _prepare_worker(paths: Sequence[str]) -> None:
    """In a worker: the parent's import path first, then TensorFlow imported with its start-up notes hidden.

    Threads per op stay TensorFlow's default (the machine's cores), as in the parent: a convolution
    splits its sums by the number of threads, so the same default is what keeps its bits the same.
    """
    for path in reversed(list(paths)):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tfopt.cli import _start_tensorflow

    _start_tensorflow()  # TensorFlow imported now, its start-up lines filtered as the tfopt command does


def _run_in_pool(trials, workers: int, on_result) -> list[train.TrialResult]:
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results: list = [None] * len(trials)
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_prepare_worker,
                                                  initargs=(list(sys.path),))
    try:
        futures = {pool.submit(train.run_trial_or_error, trial): i for i, trial in enumerate(trials)}
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()
            if on_result is not None:
                on_result(results[futures[future]])
    except BaseException:  # Ctrl-C or a broken worker: drop the trials not started, stop the ones running
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        raise
    pool.shutdown()
    return results


# --------------------------------------------------------------------- Ray
def _ray_trial(trial: train.Trial, paths: Sequence[str]) -> train.TrialResult:
    """A Ray task: one trial on whichever node Ray chose; ``worker`` names the node and the process."""
    import ray

    _prepare_worker(paths)
    result = train.run_trial_or_error(trial)
    result.worker = f"ray node {ray.get_runtime_context().get_node_id()[:12]} pid {os.getpid()}"
    return result


def _connect(address: str):
    """``(ray, connected_here)``: the ray module, connected to ``address`` unless a session is already open."""
    try:
        import ray
    except ImportError:
        raise RuntimeError('--ray needs Ray: pip install "tfopt[ray]" (or pip install ray)') from None
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except ConnectionError as error:
        raise ConnectionError(f"no Ray cluster at {address!r} ({' '.join(str(error).split())}); start one with "
                              "'ray start --head' or give its address, host:port") from None
    return ray, True


def _run_on_ray(trials, address: str, on_result) -> list[train.TrialResult]:
    ray, connected_here = _connect(address)
    try:
        task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD", max_retries=0)(_ray_trial)
        paths = [p for p in sys.path if p]
        pending = {task.remote(trial, paths): i for i, trial in enumerate(trials)}
        results: list = [None] * len(trials)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                results[i] = ray.get(ref)
                if on_result is not None:
                    on_result(results[i])
        return results
    finally:
        if connected_here:
            ray.shutdown()
