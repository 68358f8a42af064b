"""The training suite: optimizers x learning rates x seeds on the workloads of ``tfopt.lab.workloads``.

A *trial* is one optimizer at one learning rate with one seed on one workload. It trains a fresh
Keras 3 model in a custom loop (``opt.apply_gradients(zip(grads, model.trainable_variables))`` in a
``tf.function``), or with ``model.fit`` through ``opt.as_keras()`` for the workload that says so,
evaluates the validation set every ``eval_every`` steps and records:

* final training loss (the objective, penalty included) and validation loss, and the accuracies
  where they apply; for the convex workloads the gap to the optimum (float64);
* ``steps_to_target``: the first evaluated step at which the validation target is met
  (None if never); ``seconds_to_target``: the training time to that step (tracing excluded: the
  first step is counted at the median step time);
* ``status``: ``"ok"``, ``"diverged"`` (a non-finite training loss; the trial stops there) or ``"error"``
  (the trial raised, e.g. a rule that cannot run inside ``tf.function``: ``error`` says what; the sweep
  goes on).

**Seeds.** A trial's seed is a hash of (workload, seed index) (``trial_seed``), never of the order
trials run in; it seeds the model's initial weights and the batch order, so seed k gives every
optimizer and learning rate the same start and the same batches (common random numbers). Trials
run with grappler's graph rewrites off (as the harness does), so a trial gives
the same numbers in this process, a worker process, or on a Ray node (``tfopt.lab.parallel``).

**Scoring** (as AlgoPerf scores submissions). Per workload and optimizer, the time to target at a
learning rate is the median over seeds (a seed that never reaches the target counts as infinite),
and the optimizer's time is that at its best learning rate (ties: the lower median final
validation loss). With ``t[o, w]`` that time and ``r[o, w] = t[o, w] / min_o t[o, w]``, the
*performance profile* of optimizer o is ``rho_o(tau) = |{w : r[o, w] <= tau}| / |W|``: the fraction
of workloads on which it is within a factor tau of the best. Its *score* is the area under the
profile on ``1 <= tau <= TAU_MAX``, divided by ``TAU_MAX - 1`` (1 = fastest everywhere; 0 = never
within TAU_MAX of the fastest, or never at the target). Both are computed for steps and seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import socket
import time
from collections.abc import Callable, Sequence

import numpy as np

from tfopt.lab import workloads as workloads_lib

__all__ = ["Trial", "TrialResult", "trial_seed", "make_trials", "run_trial", "summarize", "Summary",
           "performance_profile", "profile_score", "LEARNING_RATES", "QUICK_LEARNING_RATES", "SEEDS", "TAU_MAX",
           "TRIAL_COLUMNS"]

LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
QUICK_LEARNING_RATES = (1e-2, 1e-1)
SEEDS = 3
QUICK_SEEDS = 1
TAU_MAX = 4.0
"""AlgoPerf integrates the performance profile up to a factor 4 of the best."""

TRIAL_COLUMNS = ("workload", "optimizer", "learning_rate", "seed_index", "seed", "status", "reached",
                 "steps_to_target", "seconds_to_target", "steps", "final_train_loss", "final_val_loss",
                 "final_train_accuracy", "final_val_accuracy", "gap_to_optimum", "step_time", "trace_time", "worker",
                 "error")
TIMING_COLUMNS = ("seconds_to_target", "step_time", "trace_time", "worker")
"""Columns that depend on the machine and its load; every other column is the same wherever a trial runs."""


def trial_seed(workload: str, seed_index: int) -> int:
    """A seed in ``[0, 2**31)`` from the workload and the seed index: SHA-256 of ``workload|index``.

    The same for every optimizer and learning rate: seed k of a workload is the same initial weights and
    batch order for all of them (common random numbers), so they are compared on equal terms.
    """
    text = f"{workload}|{int(seed_index)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class Trial:
    """What a worker needs to run one trial: plain data (picklable), the optimizer as class path + config.

    ``rule``: the class's ``rule_path`` (a built-in's name or ``module:QualName``); ``config``: its
    ``get_config()`` (the learning rate is replaced by ``learning_rate``). ``steps``: the step budget.
    """

    workload: str
    optimizer: str
    rule: str
    config: dict
    learning_rate: float
    seed_index: int
    steps: int

    @property
    def seed(self) -> int:
        return trial_seed(self.workload, self.seed_index)

    @property
    def key(self) -> tuple:
        return self.workload, self.optimizer, self.learning_rate, self.seed_index


@dataclasses.dataclass
class TrialResult:
    """One trial's outcome (see the module docstring); ``curve`` holds ``(step, val_loss, val_accuracy)``
    at every evaluation, step 0 included."""

    workload: str
    optimizer: str
    learning_rate: float
    seed_index: int
    seed: int
    status: str
    reached: bool
    steps_to_target: int | None
    seconds_to_target: float | None
    steps: int
    final_train_loss: float
    final_val_loss: float
    final_train_accuracy: float | None
    final_val_accuracy: float | None
    gap_to_optimum: float | None
    step_time: float
    trace_time: float
    worker: str
    curve: list = dataclasses.field(repr=False, default_factory=list)
    error: str | None = None  # status "error": what the trial raised (type and first line)

    def row(self) -> dict:
        """The trial as a CSV/JSON row (non-finite floats as None)."""
        return {k: _finite_or_none(getattr(self, k)) for k in TRIAL_COLUMNS}

    def numbers(self) -> dict:
        """Everything that must not depend on where the trial ran (timings and the worker left out)."""
        out = {k: getattr(self, k) for k in TRIAL_COLUMNS if k not in TIMING_COLUMNS}
        out["curve"] = [tuple(c) for c in self.curve]
        return out


def _finite_or_none(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def make_trials(optimizers: dict, learning_rates: Sequence[float], workloads: Sequence[str] | None = None,
                seeds: int = SEEDS, quick: bool = False, steps: int | None = None) -> list[Trial]:
    """Every (workload, optimizer, learning rate, seed index), in that order.

    ``optimizers``: ``{label: tfopt.Optimizer}`` (``bench.make_optimizers``); each must be importable by
    its class path (not defined in ``__main__`` or a function) when trials run in other processes.
    ``steps`` overrides the workloads' budgets (``quick_steps`` with ``quick``).
    """
    from tfopt.integrations.keras_optimizer import rule_path

    chosen = [workloads_lib.get(w) for w in (workloads or workloads_lib.names())]
    specs = {label: (rule_path(type(opt)), _config(opt)) for label, opt in optimizers.items()}
    return [Trial(w.name, label, rule, config, float(lr), k, steps or (w.quick_steps if quick else w.steps))
            for w in chosen for label, (rule, config) in specs.items() for lr in learning_rates for k in range(seeds)]


def _config(optimizer) -> dict:
    config = dict(optimizer.get_config())
    config.pop("learning_rate", None)
    return config


# ------------------------------------------------------------------ one trial
def build_optimizer(trial: Trial):
    """The trial's optimizer: its class from ``trial.rule``, built ``from_config`` at the trial's learning rate."""
    from tfopt.core.wrapper import with_learning_rate
    from tfopt.integrations.keras_optimizer import import_rule

    return import_rule(trial.rule).from_config(with_learning_rate(trial.config, trial.learning_rate))


def _batch_indices(n: int, batch: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """``[steps, batch]`` row indices: epochs of fresh permutations, cut into batches (a batch may span two)."""
    epochs = math.ceil(steps * batch / n)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)])[: steps * batch].reshape(steps, batch)


def _batches(workload, data, steps: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """The trial's ``steps`` training batches, drawn from its own generator."""
    if workload.sample_batch is not None:
        return [workload.sample_batch(data, rng, step) for step in range(steps)]
    if workload.batch_size is None:
        return [(data.x_train, data.y_train)] * steps
    idx = _batch_indices(len(data.x_train), workload.batch_size, steps, rng)
    return [(data.x_train[i], data.y_train[i]) for i in idx]


class _Evaluator:
    """Validation loss and accuracy, run eagerly (a handful of calls per trial: cheaper than tracing them)."""

    def __init__(self, workload, model, data):
        import tensorflow as tf

        self.workload, self.model = workload, model
        self.x, self.y = tf.constant(data.x_val), tf.constant(data.y_val)

    def __call__(self) -> tuple[float, float | None]:
        w = self.workload
        loss = float(w.data_loss(self.model, self.x, self.y))
        return loss, (float(w.accuracy(self.model, self.x, self.y)) if w.accuracy is not None else None)


def run_trial_or_error(trial: Trial) -> TrialResult:
    """``run_trial``, but an exception becomes a result of status ``"error"`` (so one bad rule or setting does
    not end a sweep of hundreds of trials); KeyboardInterrupt still stops it."""
    try:
        return run_trial(trial)
    except Exception as error:  # noqa: BLE001  (recorded in the result and the report)
        text = " ".join(str(error).split()) or "(no message)"
        workload = workloads_lib.get(trial.workload)
        nan_or_none = math.nan if workload.accuracy is not None else None
        return TrialResult(
            workload=trial.workload, optimizer=trial.optimizer, learning_rate=trial.learning_rate,
            seed_index=trial.seed_index, seed=trial.seed, status="error", reached=False, steps_to_target=None,
            seconds_to_target=None, steps=0, final_train_loss=math.nan, final_val_loss=math.nan,
            final_train_accuracy=nan_or_none, final_val_accuracy=nan_or_none,
            gap_to_optimum=math.nan if workload.convex else None, step_time=math.nan, trace_time=math.nan,
            worker=f"{socket.gethostname()}:{os.getpid()}", error=f"{type(error).__name__}: {text[:300]}")


def run_trial(trial: Trial) -> TrialResult:
    """Run one trial in this process (see the module docstring) and return its result."""
    import keras

    from tfopt.lab.harness import _without_graph_rewrites

    workload = workloads_lib.get(trial.workload)
    data = workload.load()
    keras.utils.set_random_seed(trial.seed)
    model = workload.build_model(data)
    optimizer = build_optimizer(trial)
    batches = _batches(workload, data, trial.steps, np.random.default_rng(trial.seed))
    with _without_graph_rewrites():
        train = _train_with_fit if workload.trainer == "fit" else _train_in_loop
        record = train(workload, model, optimizer, data, batches)
        return _result(trial, workload, model, data, record)


@dataclasses.dataclass
class _Record:
    curve: list  # (step, val_loss, val_accuracy)
    times: list  # (steps, seconds) per compiled call
    steps: int
    diverged: bool


def _chunks(batches: list, every: int):
    """``(last step, xs, ys)`` per run of ``every`` batches, stacked: ``xs[i]`` is the i-th batch of the run."""
    for start in range(0, len(batches), every):
        run = batches[start:start + every]
        yield start + len(run), np.stack([b[0] for b in run]), np.stack([b[1] for b in run])


def _train_in_loop(workload, model, optimizer, data, batches) -> _Record:
    """The custom loop: ``eval_every`` steps per compiled call (a ``tf.while_loop`` over stacked batches, each
    step ``opt.apply_gradients(zip(grads, model.trainable_variables))``), then the validation measures, in the
    same call."""
    import tensorflow as tf

    variables = model.trainable_variables
    optimizer.build(variables)
    x0, y0 = batches[0]

    x_val, y_val = tf.constant(data.x_val), tf.constant(data.y_val)
    accuracy = workload.accuracy or (lambda model, x, y: tf.constant(math.nan))

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, *np.shape(x0)], tf.as_dtype(x0.dtype)),
                                                   tf.TensorSpec([None, *np.shape(y0)], tf.as_dtype(y0.dtype))])
    def run(xs, ys):
        """The steps of one run of batches, then the validation loss and accuracy after them."""
        n = tf.shape(xs)[0]

        def step(i, losses):
            with tf.GradientTape() as tape:
                loss = workload.loss(model, xs[i], ys[i], training=True)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables))
            return i + 1, losses.write(i, loss)

        losses = tf.while_loop(lambda i, _: i < n, step, (tf.constant(0), tf.TensorArray(tf.float32, n)))[1].stack()
        with tf.control_dependencies([losses]):
            return losses, workload.data_loss(model, x_val, y_val), accuracy(model, x_val, y_val)

    curve, times = [(0, *_Evaluator(workload, model, data)())], []
    for last, xs, ys in _chunks(batches, workload.eval_every):
        started = time.perf_counter()
        losses, val_loss, val_accuracy = (t.numpy() for t in run(tf.constant(xs), tf.constant(ys)))
        times.append((len(xs), time.perf_counter() - started))
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            return _Record(curve, times, last - len(xs) + int(bad[0]) + 1, True)
        curve.append((last, float(val_loss), float(val_accuracy) if workload.accuracy is not None else None))
    return _Record(curve, times, len(batches), False)


def _train_with_fit(workload, model, optimizer, data, batches) -> _Record:
    """``model.fit`` on the same batches (one epoch of them, unshuffled) through ``optimizer.as_keras()``,
    ``eval_every`` steps per execution (``steps_per_execution``); a callback times each execution,
    evaluates after it and stops on a non-finite loss."""
    import keras

    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    evaluate = _Evaluator(workload, model, data)
    record = _Record([(0, *evaluate())], [], 0, False)

    class Monitor(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            steps = min(batch + 1, len(batches))
            record.times.append((steps - record.steps, time.perf_counter() - self.started))
            record.steps = steps
            if not math.isfinite(float(logs["loss"])):
                record.diverged = True
                self.model.stop_training = True
            else:
                record.curve.append((steps, *evaluate()))

    model.compile(optimizer=optimizer.as_keras(), loss=lambda t, p: workload.data_loss(_Identity(p), None, t),
                  jit_compile=False, steps_per_execution=workload.eval_every)
    model.fit(x, y, batch_size=len(batches[0][0]), epochs=1, shuffle=False, verbose=0, callbacks=[Monitor()])
    return record


class _Identity:
    """Stands for a model whose output is already computed (for ``model.compile``'s loss(y_true, y_pred))."""

    def __init__(self, output):
        self.output = output

    def __call__(self, x, training=False):
        return self.output


def _result(trial: Trial, workload, model, data, record: _Record) -> TrialResult:
    import tensorflow as tf

    reached_at = next((s for s, loss, acc in record.curve if workload.reached(loss, acc)), None)
    if record.diverged:
        reached_at = None
    counts = np.asarray([n for n, _ in record.times], np.float64)
    seconds = np.asarray([t for _, t in record.times], np.float64)
    step_time = float(np.median(seconds[1:] / counts[1:])) if len(counts) > 1 else float(seconds.sum() / counts.sum())
    trace_time = float(seconds[0] - counts[0] * step_time) if len(counts) else 0.0
    to_target = None
    if reached_at is not None:  # the first call at its median step time, the others as measured
        done = np.cumsum(counts) <= reached_at
        to_target = float(min(reached_at, counts[0]) * step_time + seconds[1:][done[1:]].sum())
    if record.diverged:
        train_loss = val_loss = math.nan
        train_acc = val_acc = math.nan if workload.accuracy is not None else None
        gap = math.nan if workload.convex else None
    else:
        xt, yt = tf.constant(data.x_train), tf.constant(data.y_train)
        train_loss = float(workload.loss(model, xt, yt))
        train_acc = float(workload.accuracy(model, xt, yt)) if workload.accuracy is not None else None
        _, val_loss, val_acc = record.curve[-1]
        gap = workloads_lib.convex_gap(workload.name, model) if workload.convex else None
    return TrialResult(
        workload=trial.workload, optimizer=trial.optimizer, learning_rate=trial.learning_rate,
        seed_index=trial.seed_index, seed=trial.seed, status="diverged" if record.diverged else "ok",
        reached=reached_at is not None, steps_to_target=reached_at, seconds_to_target=to_target, steps=record.steps,
        final_train_loss=train_loss, final_val_loss=val_loss, final_train_accuracy=train_acc,
        final_val_accuracy=val_acc, gap_to_optimum=gap, step_time=step_time, trace_time=trace_time,
        worker=f"{socket.gethostname()}:{os.getpid()}", curve=[tuple(c) for c in record.curve])


# ------------------------------------------------------------------- scoring
@dataclasses.dataclass
class Summary:
    """One optimizer on one workload at its best learning rate: medians over the seeds there."""

    workload: str
    optimizer: str
    best_lr: float
    reached: int  # seeds that reached the target at best_lr
    seeds: int
    steps_to_target: float  # inf if the median seed never reached it
    seconds_to_target: float
    final_train_loss: float
    final_val_loss: float
    final_train_accuracy: float | None
    final_val_accuracy: float | None
    gap_to_optimum: float | None
    diverged_lrs: list
    errors: list = dataclasses.field(default_factory=list)  # "lr: message" of the learning rates whose trials raised


def _median(values) -> float:
    values = [math.inf if v is None else v for v in values]
    return float(np.median(values)) if values else math.nan


def _median_or_none(values):
    return None if any(v is None for v in values) else float(np.median(values))


def summarize(results: Sequence[TrialResult]) -> list[Summary]:
    """Per workload and optimizer (in the results' order): the best learning rate and the medians there.

    Best: the lowest median steps to target (a seed that never gets there counts as infinite), then
    the lowest median final validation loss (NaN, a divergence, counts as infinite).
    """
    groups: dict = {}
    for r in results:
        groups.setdefault((r.workload, r.optimizer), {}).setdefault(r.learning_rate, []).append(r)
    out = []
    for (workload, optimizer), by_lr in groups.items():
        def rank(lr, by_lr=by_lr):
            rs = by_lr[lr]
            val = _median([v if math.isfinite(v) else math.inf for v in (r.final_val_loss for r in rs)])
            return _median([r.steps_to_target for r in rs]), val, lr

        best = min(by_lr, key=rank)
        rs = by_lr[best]
        out.append(Summary(
            workload=workload, optimizer=optimizer, best_lr=best, reached=sum(r.reached for r in rs), seeds=len(rs),
            steps_to_target=_median([r.steps_to_target for r in rs]),
            seconds_to_target=_median([r.seconds_to_target for r in rs]),
            final_train_loss=_median([r.final_train_loss for r in rs]),
            final_val_loss=_median([r.final_val_loss for r in rs]),
            final_train_accuracy=_median_or_none([r.final_train_accuracy for r in rs]),
            final_val_accuracy=_median_or_none([r.final_val_accuracy for r in rs]),
            gap_to_optimum=_median_or_none([r.gap_to_optimum for r in rs]),
            diverged_lrs=sorted(lr for lr, group in by_lr.items() if any(r.status == "diverged" for r in group)),
            errors=[f"lr={lr:g}: {next(r.error for r in group if r.error)}" for lr, group in sorted(by_lr.items())
                    if any(r.error for r in group)]))
    return out


def ratios(summaries: Sequence[Summary], measure: str = "steps_to_target") -> dict[str, dict[str, float]]:
    """``{optimizer: {workload: t / best t}}`` (inf where the optimizer, or every optimizer, never reached it)."""
    times: dict = {}
    for s in summaries:
        times.setdefault(s.workload, {})[s.optimizer] = getattr(s, measure)
    out: dict = {}
    for workload, by_opt in times.items():
        best = min(by_opt.values())
        for optimizer, t in by_opt.items():
            if not math.isfinite(best) or not math.isfinite(t):
                r = math.inf
            elif best == 0:
                r = 1.0 if t == 0 else math.inf
            else:
                r = t / best
            out.setdefault(optimizer, {})[workload] = r
    return out


def performance_profile(ratio: dict[str, dict[str, float]], taus: Sequence[float]) -> dict[str, np.ndarray]:
    """``rho_o(tau)``: the fraction of workloads with ``ratio[o][w] <= tau``, for each tau."""
    taus = np.asarray(taus, np.float64)
    return {o: np.mean(np.asarray(list(by_w.values()), np.float64)[None, :] <= taus[:, None], axis=1)
            for o, by_w in ratio.items()}


def profile_score(ratio_by_workload: dict[str, float], tau_max: float = TAU_MAX) -> float:
    """The area under the profile on ``[1, tau_max]`` over ``tau_max - 1``: the mean over workloads of
    ``(tau_max - min(r, tau_max)) / (tau_max - 1)`` (the profile is a step function, so this is exact)."""
    rs = list(ratio_by_workload.values())
    return float(np.mean([(tau_max - min(r, tau_max)) / (tau_max - 1.0) for r in rs])) if rs else math.nan


# ------------------------------------------------------------ run the suite
def run_trials_in_process(trials: Sequence[Trial], on_result: Callable[[TrialResult], None] | None = None
                          ) -> list[TrialResult]:
    """Run the trials one after the other here (``run_trial_or_error``); results in the trials' order."""
    out = []
    for trial in trials:
        out.append(run_trial_or_error(trial))
        if on_result is not None:
            on_result(out[-1])
    return out


def run_train_suite(optimizers: dict, learning_rates: Sequence[float] | None = None,
                    workloads: Sequence[str] | None = None, seeds: int | None = None, quick: bool = False,
                    workers: int | None = None, ray: str | None = None, steps: int | None = None,
                    on_result: Callable[[TrialResult], None] | None = None) -> tuple[list[TrialResult], list[Summary]]:
    """Every optimizer x learning rate x seed on every workload; ``(results, summaries)``.

    Defaults: ``LEARNING_RATES`` and ``SEEDS`` seeds, or with ``quick`` ``QUICK_LEARNING_RATES``, ``QUICK_SEEDS``
    and the workloads' shorter budgets. ``workers``/``ray``: where the trials run (``tfopt.lab.parallel``).
    """
    from tfopt.lab import parallel

    rates = learning_rates or (QUICK_LEARNING_RATES if quick else LEARNING_RATES)
    trials = make_trials(optimizers, rates, workloads, seeds or (QUICK_SEEDS if quick else SEEDS), quick, steps)
    results = parallel.run_trials(trials, workers=workers, ray=ray, on_result=on_result)
    return results, summarize(results)


# ------------------------------------------------------------------- tables
def _num(v, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and not math.isfinite(v):
        return "diverged" if math.isnan(v) else "never"
    return f"{v:.{digits}g}"


def _steps_text(s: Summary) -> str:
    if not math.isfinite(s.steps_to_target):
        return "never"
    text = f"{s.steps_to_target:.0f}"
    return text if s.reached == s.seeds else f"{text} ({s.reached}/{s.seeds})"


def glance(summaries: Sequence[Summary]) -> tuple[tuple, list[tuple]]:
    """Rows: workloads; columns: optimizers; a cell: median steps to the target at the best learning rate
    (``@ lr``), ``never`` if the median seed never got there at any learning rate."""
    optimizers = list(dict.fromkeys(s.optimizer for s in summaries))
    by_key = {(s.workload, s.optimizer): s for s in summaries}
    rows = []
    for name in dict.fromkeys(s.workload for s in summaries):
        cells = []
        for o in optimizers:
            s = by_key.get((name, o))
            cells.append("" if s is None else _steps_text(s) + (f" @ {s.best_lr:g}" if s.reached else ""))
        rows.append((name, workloads_lib.get(name).target_text, *cells))
    return ("workload", "target", *optimizers), rows


def score_table(summaries: Sequence[Summary]) -> tuple[tuple, list[tuple]]:
    """Per optimizer: AlgoPerf-style scores (area under the profile up to TAU_MAX, 1 = best) for steps and
    seconds, and the workloads whose target it reached."""
    by_steps, by_seconds = ratios(summaries, "steps_to_target"), ratios(summaries, "seconds_to_target")
    rows = []
    for o in by_steps:
        reached = sum(math.isfinite(r) for r in by_steps[o].values())
        rows.append((o, f"{profile_score(by_steps[o]):.3f}", f"{profile_score(by_seconds[o]):.3f}",
                     f"{reached}/{len(by_steps[o])}"))
    return ("optimizer", "score (steps)", "score (seconds)", "targets reached"), rows


SUMMARY_HEADER = ("workload", "optimizer", "best lr", "reached", "steps to target", "s to target", "train loss",
                  "val loss", "train acc", "val acc", "gap to optimum", "diverged at lr")


def summary_rows(summaries: Sequence[Summary]) -> list[tuple]:
    return [(s.workload, s.optimizer, f"{s.best_lr:g}", f"{s.reached}/{s.seeds}", _steps_text(s),
             _num(s.seconds_to_target), _num(s.final_train_loss, 4), _num(s.final_val_loss, 4),
             _num(s.final_train_accuracy, 4), _num(s.final_val_accuracy, 4), _num(s.gap_to_optimum, 2),
             ", ".join(f"{lr:g}" for lr in s.diverged_lrs)) for s in summaries]


# ------------------------------------------------------------------ figures
def figure_profile(summaries: Sequence[Summary], tau_max: float = TAU_MAX * 2):
    """Performance profiles by steps and by seconds: the fraction of workloads on which each optimizer's time to
    target is within a factor tau of the best optimizer's (higher and further left is better)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5.2))
    axes = fig.subplots(1, 2, sharey=True)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.86, bottom=0.27, wspace=0.08)
    taus = np.geomspace(1.0, tau_max, 400)
    count = len({s.workload for s in summaries})
    styles = ["-", "--", "-.", ":"]
    for ax, measure, title in zip(axes, ("steps_to_target", "seconds_to_target"), ("steps", "seconds")):
        ratio = ratios(summaries, measure)
        for i, (o, rho) in enumerate(performance_profile(ratio, taus).items()):
            ax.step(taus, rho, where="post", lw=2.4, ls=styles[i // 10 % 4], color=f"C{i % 10}",
                    label=f"{o} (score {profile_score(ratio[o]):.2f})" if measure == "steps_to_target" else o)
        ax.set_xscale("log")
        ax.set_xlim(1.0, tau_max)
        ticks = [t for t in (1, 1.5, 2, 3, 4, 6, 8, 16, 32) if t <= tau_max]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_ylim(-0.03, 1.03)
        ax.axvline(TAU_MAX, color="0.6", lw=1, ls=":")
        ax.set_xlabel(f"τ: within a factor τ of the best {title} to target")
        ax.set_title(f"time to target in {title}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"fraction of the {count} workloads")
    fig.suptitle("Performance profile (AlgoPerf scoring)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncols=min(4, len(ratio)), frameon=False)
    return fig


def figure_curves(results: Sequence[TrialResult], summaries: Sequence[Summary]):
    """One panel per workload: the validation measure of its target against steps, each optimizer at its best
    learning rate (median over seeds), the target dashed."""
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(s.workload for s in summaries))
    optimizers = list(dict.fromkeys(s.optimizer for s in summaries))
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows + 1.0))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    fig.subplots_adjust(left=0.07, right=0.99, top=1 - 0.55 / (3.6 * rows + 1.0),
                        bottom=1.1 / (3.6 * rows + 1.0), hspace=0.5, wspace=0.3)
    best = {(s.workload, s.optimizer): s.best_lr for s in summaries}
    for ax, name in zip(axes, names):
        workload = workloads_lib.get(name)
        on_acc = workload.target_on == "accuracy"
        for i, o in enumerate(optimizers):
            curves = [r.curve for r in results if r.workload == name and r.optimizer == o
                      and r.learning_rate == best.get((name, o))]
            steps, values = _median_curve(curves, 2 if on_acc else 1)
            if len(steps):
                ax.plot(steps, values, color=f"C{i % 10}", lw=2, label=o)
        ax.axhline(workload.target, color="black", ls="--", lw=1)
        if not on_acc:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("val. accuracy" if on_acc else "val. loss")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, [f"{label} (best lr)" for label in labels], loc="lower center", ncols=len(labels),
               frameon=False)
    return fig


def _median_curve(curves: list, column: int) -> tuple[np.ndarray, np.ndarray]:
    """The median over seeds at the steps every seed evaluated (a diverged seed ends early)."""
    if not curves:
        return np.zeros(0), np.zeros(0)
    length = min(len(c) for c in curves)
    steps = np.asarray([curves[0][k][0] for k in range(length)])
    values = np.asarray([[np.nan if c[k][column] is None else c[k][column] for c in curves] for k in range(length)],
                        np.float64)
    return steps, np.median(values, axis=1)


# ------------------------------------------------------------------- report
PROFILE_NOTE = ("Read it left to right: at τ = 1 the height is the fraction of workloads on which that optimizer "
                "was the fastest to the target, at τ = 2 the fraction where it needed at most twice the best time; "
                "a curve that stays low never reached some targets (higher and further left is better; the dotted "
                f"line is τ = {TAU_MAX:g}, where the score's area stops).")
CURVES_NOTE = ("Each panel is one workload's validation measure (accuracy or loss, as its target is set) over "
               "training, for each optimizer at its best learning rate, median over seeds; the dashed line is the "
               "target, so the first curve to cross it is the fastest.")
TRAIN_GUIDE = """\
**How to read it.** A cell of the glance table is the median over seeds of the steps to the validation
target at the optimizer's best learning rate (`@ lr`); `(k/n)` says only k of n seeds got there; `never`:
the median seed never reached the target at any learning rate. The score is AlgoPerf's: the area under
the performance profile up to τ = {tau:g}, scaled to 1 (1 = fastest on every workload). In the full
table, losses and accuracies are the final ones (median over seeds at the best learning rate; train loss
includes the L2 penalty where there is one), `s to target` is training time without tracing, `gap to
optimum` is the final training objective minus the exact optimum of the convex workloads (float64:
scikit-learn's for the logistic regression, least squares for the linear one), and `diverged at lr`
lists the learning rates at which some seed's loss became NaN or Inf.
"""


def report_sections(results: Sequence[TrialResult], summaries: Sequence[Summary], out_dir, style: dict | None = None,
                    advance: Callable[[], None] | None = None):
    """Draw the training suite's figures into ``out_dir`` and return ``(first, last, files)``: the report's
    sections to show first (figures, then the tables), the one to put at the end, and the PNGs written."""
    from pathlib import Path

    import matplotlib

    from tfopt.lab import plotting
    from tfopt.lab.bench import Section, markdown_table

    out_dir = Path(out_dir)
    files = []
    with matplotlib.rc_context(style or {}):
        for name, fig in (("performance_profile.png", figure_profile(summaries)),
                          ("train_curves.png", figure_curves(results, summaries))):
            plotting.save_figure(fig, out_dir / name)
            files.append(out_dir / name)
            if advance is not None:
                advance()
    trials = len(results)
    rates = sorted({r.learning_rate for r in results})
    seeds = len({r.seed_index for r in results})
    intro = (f"{trials} trials: {', '.join(dict.fromkeys(r.optimizer for r in results))} × learning rates "
             f"{', '.join(f'{lr:g}' for lr in rates)} × {seeds} seed{'s' * (seeds > 1)} × "
             f"{len({r.workload for r in results})} workloads (`tfopt.lab.workloads`), each a fresh Keras model "
             "trained in a custom loop with the tfopt optimizer (`autoencoder_fit`: `model.fit` through "
             "`opt.as_keras()`).")
    figures = [("Performance profile", files[0], PROFILE_NOTE), ("Validation curves", files[1], CURVES_NOTE)]
    tables = "\n".join([
        "### At a glance: median steps to the validation target at the best learning rate", "",
        markdown_table(*glance(summaries)), "", markdown_table(*score_table(summaries)), "",
        TRAIN_GUIDE.format(tau=TAU_MAX), "### Per workload, at each optimizer's best learning rate", "",
        markdown_table(SUMMARY_HEADER, summary_rows(summaries))])
    errors = [f"* {s.workload}, {s.optimizer}: {e}" for s in summaries for e in s.errors]
    if errors:
        tables += "\n\n### Trials that raised\n\nThey count as never reaching the target.\n\n" + "\n".join(errors)
    first = [Section("Training suite: performance profile and curves", figures, intro=intro),
             Section("Training suite: tables", [], tables)]
    last = [Section("Training suite: all trials", [], "Every trial (each learning rate and seed), with its "
                    "validation curve, is in `train_results.csv` and `train_results.json`.")]
    return first, last, files


DIAGNOSED = "mlp_digits"
"""The workload whose per-step diagnostics the report draws: each optimizer at its best learning rate."""
DIAGNOSTICS_NOTE = (
    "One run per optimizer (at its best learning rate, first seed, the quick run's steps) recorded step by step: "
    "the learning rate, the global norm of the update, each layer's update relative to its weights (the dotted "
    "line is 1e-3, the usual healthy size; far above, the layer thrashes; far below, it hardly learns) and the "
    "RMS of each kind of slot. The same numbers are TensorBoard scalars: `tensorboard --logdir {logdir}`.")


def diagnostics_section(optimizers: dict, summaries: Sequence[Summary], out_dir, style: dict | None = None,
                        workload: str = DIAGNOSED):
    """Per-step diagnostics (``tfopt.lab.diagnostics``) of each optimizer on one workload, for the report.

    Each optimizer of ``optimizers`` (``{label: optimizer}``) trains a fresh model of ``workload`` for its
    ``quick_steps`` at its best learning rate in ``summaries``, seeded as its first trial there, with
    ``train_with_diagnostics``: TensorBoard scalars under ``out_dir/tensorboard/<label>``, the figure
    ``out_dir/diagnostics.png``. Returns ``(Section, files)``, or ``(None, [])`` when ``summaries`` has no
    such workload. An optimizer that raises (e.g. it cannot run in ``tf.function``) is named in the text.
    """
    from pathlib import Path

    import keras
    import matplotlib

    from tfopt.core.wrapper import with_learning_rate
    from tfopt.lab.bench import Section
    from tfopt.lab.diagnostics import plot_diagnostics, train_with_diagnostics
    from tfopt.lab.harness import _without_graph_rewrites

    best = {s.optimizer: s.best_lr for s in summaries if s.workload == workload}
    if not best:
        return None, []
    spec, out_dir = workloads_lib.get(workload), Path(out_dir)
    data, runs, failed = spec.load(), {}, []
    for label, optimizer in optimizers.items():
        if label not in best:
            continue
        seed = trial_seed(workload, 0)
        keras.utils.set_random_seed(seed)
        model = spec.build_model(data)
        rule = type(optimizer).from_config(with_learning_rate(_config(optimizer), best[label]))
        batches = _batches(spec, data, spec.quick_steps, np.random.default_rng(seed))
        logdir = out_dir / "tensorboard" / re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)
        try:
            with _without_graph_rewrites():
                runs[f"{label} lr={best[label]:g}"] = train_with_diagnostics(
                    model, rule, batches, lambda m, x, y: spec.loss(m, x, y, training=True), logdir)
        except Exception as error:  # noqa: BLE001 - reported in the section, as the suite reports trials
            failed.append(f"* {label}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    files, figures = [], []
    if runs:
        path = out_dir / "diagnostics.png"
        with matplotlib.rc_context(style or {}):
            plot_diagnostics(runs, title=f"{workload}: {spec.description}", save=path)
        files.append(path)
        figures.append((f"Per-step diagnostics on {workload}", path,
                        DIAGNOSTICS_NOTE.format(logdir=out_dir / "tensorboard")))
    text = "Optimizers that raised:\n\n" + "\n".join(failed) if failed else ""
    return Section(f"Training suite: per-step diagnostics on {workload}", figures, text=text), files


def write_tables(results: Sequence[TrialResult], summaries: Sequence[Summary], out_dir, settings: dict) -> list:
    """Write ``train_results.csv`` (one row per trial) and ``train_results.json`` (settings, trials with their
    curves, summaries); return their paths."""
    import csv
    import json
    from pathlib import Path

    out_dir = Path(out_dir)
    csv_path, json_path = out_dir / "train_results.csv", out_dir / "train_results.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(TRIAL_COLUMNS)
        for r in results:
            writer.writerow(["" if v is None else v for v in (getattr(r, k) for k in TRIAL_COLUMNS)])
    trials = [{**r.row(), "curve": [[_finite_or_none(v) for v in c] for c in r.curve]} for r in results]
    rows = [{k: _finite_or_none(v) for k, v in dataclasses.asdict(s).items()} for s in summaries]
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump({"settings": _plain(settings), "trials": trials, "summaries": rows}, f, indent=1, allow_nan=False)
        f.write("\n")
    return [csv_path, json_path]


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return _finite_or_none(value)
