"""The convergence harness: run an optimizer on a test loss until it stops.

``convergence_test`` runs the TensorFlow guide's convergence loop ("Optimizers
with Core APIs") for one start or for a batch of starts, compiled into one
``tf.function`` with a ``tf.while_loop``. One iteration, for every row of
``x`` (shape ``[n, dim]``) at once:

1. the loss of each row and the gradient of their sum (rows are independent,
   so each row gets its own gradient) are computed with ``tf.GradientTape``;
2. a row *explodes* if its gradient or loss is NaN or Inf (the guide checks NaN
   only; ``explode_on="nan"`` restores that) -- checked before the update,
   which is then not applied to that row;
3. with ``grad_tol``, a row whose gradient norm is ``<= grad_tol`` *converges*
   here, also before the update;
4. the optimizer applies its update; rows that stopped earlier are restored,
   so they stay frozen from then on;
5. a row *converges* when the update left it exactly unchanged
   (``x_new == x_old``, the guide's test), or, with ``tol``, when the step's
   norm is ``<= tol``;
6. rows still running after ``max_iters`` iterations stop with ``"max_iters"``.

Iterations are counted from 1, like the guide: a row that explodes at the first
gradient has ``iterations == 1`` and an empty path.

The same loop runs eagerly with ``eager=True``, and the compiled loop gives the
same bits (tested). For that the compiled loop runs without grappler, TensorFlow's
graph optimizer, whose rewrites change last bits: its arithmetic optimizer turns
``Pow(x, 3)`` into ``x * Square(x)`` (the gradient of the guide's ``x**4``), and
constant folding reassociates sums with a constant, ``(x*x + y) - 11`` into
``x*x + (y - 11)`` (Himmelblau). It is switched off for this thread and these
calls only (``_without_graph_rewrites``).
``jit_compile=True`` (XLA) is much faster, also for big batches, but not
bit-identical: XLA rewrites ``pow`` and fuses and contracts multiply-adds.

**Rules that are not elementwise.** A batch is one ``[n, dim]`` variable, which
makes its rows independent runs only for an elementwise rule
(``tfopt.kernels.compiler.elementwise``: Adam, RMSprop, Ftrl, a chain of
elementwise transforms, ...). Any other rule (Lamb's trust ratio, Adafactor's
factored moments, Muon's orthogonalization, a chain with ``clip_by_global_norm``,
a wrapper) would couple the rows, and would see a ``[1, dim]`` matrix where the
problem's x is a vector. For those each row runs as its own loop on a variable of
shape ``[dim]``, one row after the other (a ``Problem``'s loss sees the row alone;
a loss function, which may mix rows, gets the whole batch with the other rows at
their starts, and the row's own loss is used): the same answers as n separate
calls, slower (about 0.1 s per row of 500 iterations; 10,000 starts take
minutes).

Compiled loops are cached by optimizer class and configuration structure, loss,
``[n, dim]``, dtype and options: a second call with the same shapes (a new
optimizer object, other hyperparameter values, another start or ``max_iters``)
runs without retracing. Calls are not thread-safe. The loop is traced without
AutoGraph: a loss function or learning-rate schedule that branches on a tensor
must use ``tf.where`` or ``tf.cond``, not ``if``.
"""

from __future__ import annotations

import collections
import contextlib
import numbers
import time
import weakref
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.eager import context

from tfopt.core.hyperparameters import Hyperparameter
from tfopt.core.optimizer import Optimizer
from tfopt.core.wrapper import learning_rate_of, with_learning_rate
from tfopt.kernels import compiler
from tfopt.lab import problems as problems_lib
from tfopt.lab.results import (
    CONVERGED,
    CONVERGED_BEFORE_UPDATE,
    EXPLODED,
    RUNNING,
    BatchResult,
    ConvergenceResult,
)

__all__ = ["convergence_test", "ConvergenceResult", "BatchResult"]

RECORD_LIMIT = 2**24
"""``record_path=None`` records paths when they hold at most this many numbers (64 MB in float32)."""

_CACHE_SIZE = 16
_UNROLL = 4  # iterations per while-loop trip in graph mode: ~30% faster on small problems
_PER_ROW = "per row"  # stands for per-row learning rates in a configuration


def convergence_test(
    optimizer: Optimizer,
    problem: problems_lib.Problem | str | Callable,
    init=None,
    max_iters: int = 2000,
    *,
    learning_rate=None,
    tol: float | None = None,
    grad_tol: float | None = None,
    explode_on: str = "nonfinite",
    record_path: bool | None = None,
    dtype=None,
    jit_compile: bool = False,
    eager: bool = False,
) -> ConvergenceResult | BatchResult:
    """Run ``optimizer`` on ``problem`` from ``init`` until each run stops.

    Args:
      optimizer: a tfopt optimizer. It is only read: the runs use a fresh copy
        (``from_config(get_config())``), so its slots and ``iterations`` are untouched.
      problem: a ``tfopt.problems.Problem``, its name, or a callable ``loss_fn(x)``.
        A callable gets ``x`` of shape ``[n, dim]`` and returns one loss per row:
        shape ``[n]`` (``[n, 1]`` and, for one run, ``[]`` are accepted too, so the
        guide's elementwise ``loss`` works as it is).
      init: the start. A scalar (dim 1) or shape ``[dim]``: one run, a
        ``ConvergenceResult``. Shape ``[n, dim]``: n runs in one loop, a
        ``BatchResult``. Defaults to ``problem.default_init``; required for a callable.
      max_iters: the most iterations a run takes (>= 1).
      learning_rate: overrides the optimizer's learning rate: a number, or one
        value per row (length n) for a learning-rate sweep. With one start and
        k learning rates the start is repeated: k runs.
      tol: also converge when the step's Euclidean norm is ``<= tol``.
      grad_tol: also converge (before the update) when the gradient norm is ``<= grad_tol``.
      explode_on: ``"nonfinite"`` (default): NaN or Inf in the gradient or loss;
        ``"nan"``: NaN only, exactly the guide's check.
      record_path: record ``path`` and ``losses``. ``None`` (default) records them
        when the buffers hold at most ``RECORD_LIMIT`` numbers (``max_iters * n * (dim + 1)``),
        so 10,000 starts x 2,000 iterations do not record unless asked to.
      dtype: dtype of x; defaults to init's floating dtype (tensors, NumPy arrays), else float32.
      jit_compile: compile the loop with XLA: fastest, not bit-identical to eager.
      eager: run the same loop op by op in Python (slow; the reference for the compiled loop).

    Returns:
      A ``ConvergenceResult`` (one run) or a ``BatchResult`` (init of shape ``[n, dim]``,
      or several learning rates).

    Raises:
      ValueError: before anything runs, on an ``init`` whose last axis is not the
        problem's ``dim``, a non-positive ``max_iters``, per-row learning rates
        whose count is not n, a loss that does not return one value per row, ...
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a tfopt optimizer, not {type(optimizer).__name__}.")
    problem, loss_fn = _resolve_problem(problem, init)
    x0, batched, dtype = _initial_points(problem, init, dtype)
    if isinstance(max_iters, bool) or not isinstance(max_iters, numbers.Integral) or max_iters < 1:
        raise ValueError(f"max_iters must be an integer >= 1, got {max_iters!r}.")
    rates = _learning_rates(learning_rate)
    if rates is not None and rates.ndim == 1:
        if len(x0) == 1 and not batched:
            x0, batched = np.repeat(x0, len(rates), axis=0), len(rates) > 1
        if len(rates) != len(x0):
            raise ValueError(f"learning_rate has {len(rates)} values but init has {len(x0)} rows; give one per row.")
    if explode_on not in ("nonfinite", "nan"):
        raise ValueError(f"explode_on must be 'nonfinite' or 'nan', got {explode_on!r}.")
    tols = {name: _tolerance(name, value) for name, value in (("tol", tol), ("grad_tol", grad_tol))}
    n, dim = x0.shape
    if record_path is None:
        record_path = max_iters * n * (dim + 1) <= RECORD_LIMIT

    config = optimizer.get_config()
    if rates is not None:  # a per-row variable is set up by the runner (a wrapper's: its inner rule's)
        config = with_learning_rate(config, float(rates) if rates.ndim == 0 else _PER_ROW)
    options = (explode_on, bool(record_path), tol is not None, grad_tol is not None, bool(jit_compile))
    by_row = not _elementwise(optimizer)
    # by row, a Problem's loss (one value per row, by contract) is evaluated on the row alone
    runner = _runner(type(optimizer), config, loss_fn, n, dim, dtype, options + (by_row, problem is not None))
    start = time.perf_counter()
    if by_row:
        out = _merge([runner.run(tf.constant(x0, dtype), max_iters, _hyper(runner, config, rates, row), tols, eager,
                                 row) for row in range(n)])
    else:
        out = runner.run(tf.constant(x0, dtype), max_iters, _hyper(runner, config, rates), tols, eager)
        out = {k: v.numpy() for k, v in out.items()}
    wall_time = time.perf_counter() - start
    batch = BatchResult.from_loop(out, problem, wall_time)
    return batch if batched else batch[0]


_ELEMENTWISE = weakref.WeakKeyDictionary()  # optimizer -> (its config's repr, whether its rule is elementwise)


def _elementwise(optimizer) -> bool:
    """``compiler.elementwise``, remembered per optimizer and configuration (it traces the rule)."""
    config = repr(optimizer.get_config())
    known = _ELEMENTWISE.get(optimizer)
    if known is None or known[0] != config:
        known = _ELEMENTWISE[optimizer] = (config, compiler.elementwise(optimizer))
    return known[1]


def _hyper(runner, config, rates, row=None) -> dict:
    """The numeric hyperparameters to assign in the loop (per-row learning rates: those of ``row`` if given)."""
    def value(name):
        number = learning_rate_of(config) if name == "learning_rate" else config[name]
        if number is not _PER_ROW:
            return number
        return rates[:, None] if row is None else rates[row]

    return {name: tf.constant(value(name), tf.float64) for name in runner.assigned}


def _merge(outs: list) -> dict:
    """One batch's outputs from one run per row: paths padded to the longest with each row's last entry
    (as the batched loop records a stopped row, frozen)."""
    outs = [{k: v.numpy() for k, v in out.items()} for out in outs]
    merged = {k: np.concatenate([out[k] for out in outs]) for k in ("status", "iterations", "x_final", "loss_final")}
    if "path" in outs[0]:
        length = max(len(out["path"]) for out in outs)
        for key in ("path", "losses_before"):
            merged[key] = np.concatenate([np.concatenate([out[key], np.repeat(out[key][-1:], length - len(out[key]),
                                                                                   axis=0)]) for out in outs], axis=1)
    return merged


# --------------------------------------------------------------------- input
def _resolve_problem(problem, init):
    if isinstance(problem, (str, problems_lib.Problem)):
        problem = problems_lib.get(problem)
        return problem, problem.loss
    if callable(problem):
        if init is None:
            raise ValueError("init is required when the problem is a loss function (it sets dim).")
        return None, problem
    raise TypeError(f"problem must be a Problem, a problem name or a loss function, not {type(problem).__name__}.")


def _initial_points(problem, init, dtype):
    """Return ``(x0 [n, dim] NumPy, batched, dtype)``."""
    if init is None:
        init = problem.default_init
    if dtype is None:
        given = getattr(init, "dtype", None)
        dtype = tf.as_dtype(given) if given is not None and tf.as_dtype(given).is_floating else tf.float32
    dtype = tf.as_dtype(dtype)
    x0 = np.asarray(init, dtype=dtype.as_numpy_dtype)
    dim = problem.dim if problem is not None else (1 if x0.ndim == 0 else x0.shape[-1])
    if x0.ndim == 0 and dim != 1:
        raise ValueError(f"A scalar init needs a problem of dim 1; {problem.name!r} has dim {dim}.")
    if x0.ndim > 2 or (x0.ndim > 0 and x0.shape[-1] != dim):
        name = f"problem {problem.name!r}" if problem is not None else "the loss"
        raise ValueError(f"init has shape {list(x0.shape)}; {name} needs [{dim}] (one run) or [n, {dim}] (a batch).")
    if x0.size == 0:
        raise ValueError("init is empty: give at least one starting point.")
    return x0.reshape(-1, dim), x0.ndim == 2, dtype


def _learning_rates(learning_rate):
    if learning_rate is None:
        return None
    rates = np.asarray(learning_rate, dtype=np.float64)
    if rates.ndim > 1:
        raise ValueError(f"learning_rate must be a number or one number per row, got shape {list(rates.shape)}.")
    if np.isnan(rates).any() or (rates < 0).any():
        raise ValueError(f"Invalid learning_rate: {learning_rate!r}; it must be >= 0.")
    return rates


def _tolerance(name, value):
    if value is None:
        return tf.constant(0.0, tf.float64)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be None or a number >= 0, got {value!r}.")
    return tf.constant(value, tf.float64)


def _per_row(loss, n: int, dim: int) -> tf.Tensor:
    """A loss of shape [n] (also [n, 1], or [] for n == 1) as shape [n]; else ValueError."""
    shape = loss.shape
    if shape.rank is not None and (shape == [n] or shape == [n, 1] or (n == 1 and shape.rank == 0)):
        return tf.reshape(loss, [n])
    raise ValueError(
        f"The loss must return one value per row: shape [{n}] for x of shape [{n}, {dim}], got shape {shape}."
    )


# -------------------------------------------------------------------- runner
_RUNNERS: collections.OrderedDict = collections.OrderedDict()


def _hyperparameter_names(cls, config) -> list[str]:
    return [name for name in config if isinstance(getattr(cls, name, None), Hyperparameter)]


def _runner(cls, config, loss_fn, n, dim, dtype, options) -> _Runner:
    """A cached ``_Runner`` for this optimizer structure, loss, shape and options.

    Numeric hyperparameters are not part of the key (they are assigned per call);
    user variables and schedules are, by identity.
    """
    hyper = _hyperparameter_names(cls, config)
    fixed = tuple(sorted((k, repr(v)) for k, v in config.items() if k not in hyper and k != "name"))
    kinds = tuple((k, config[k] if isinstance(config[k], str) else "number" if isinstance(config[k], float)
                   else id(config[k])) for k in hyper)
    key = (cls, fixed, kinds, id(loss_fn), n, dim, dtype.name, options)
    runner = _RUNNERS.pop(key, None)
    if runner is None:
        runner = _Runner(cls, config, loss_fn, n, dim, dtype, options)
    _RUNNERS[key] = runner
    while len(_RUNNERS) > _CACHE_SIZE:
        _RUNNERS.popitem(last=False)
    return runner


class _Runner:
    """State for one (optimizer structure, loss, [n, dim], options): reused across calls.

    Owns ``x``, a fresh optimizer (its own hyperparameter variables, slots and
    step), the per-row learning-rate variable and the compiled loop. A call
    hands the loop the start and the numeric hyperparameters as tensors; the
    loop assigns them and resets x, the slots and the step: no retrace.
    """

    def __init__(self, cls, config, loss_fn, n, dim, dtype, options):
        self.loss_fn, self.dim = loss_fn, dim
        self.explode_on, self.record, self.use_tol, self.use_grad_tol, jit, self.by_row, self.row_alone = options
        # by_row: the loop runs one row (``row``) of the n on a variable of shape [dim] (see the module docstring).
        self.total, self.n = n, 1 if self.by_row else n
        n = self.n
        config = dict(config)
        # Clipping by norm is applied per row here, so rows stay independent runs.
        clipnorm, global_clipnorm = config.pop("clipnorm", None), config.pop("global_clipnorm", None)
        self.clipnorm = clipnorm or global_clipnorm
        self.rates = None
        if learning_rate_of(config) is _PER_ROW:
            with tf.init_scope():
                shape = [] if self.by_row else [n, 1]  # a row's own rate, or one per row of x
                self.rates = tf.Variable(tf.zeros(shape, tf.float64), trainable=False, name="learning_rates")
            config = with_learning_rate(config, self.rates)
        self.optimizer = cls.from_config(config)
        # Numbers (and per-row rates) are assigned at each call; variables and schedules are read.
        self.assigned = [k for k in _hyperparameter_names(cls, config) if isinstance(config[k], float)]
        if self.rates is not None:
            self.assigned.append("learning_rate")
        with tf.init_scope():
            self.x = tf.Variable(tf.zeros([dim] if self.by_row else [n, dim], dtype), name="x")
            # by row with a loss function: the batch the loss sees, the other rows at their starts
            self.starts = None if not self.by_row or self.row_alone else tf.Variable(
                tf.zeros([self.total, dim], dtype), trainable=False, name="starts")
        self.optimizer.build([self.x])
        self.slots = [self.optimizer.get_slot(self.x, name) for name in self.optimizer.slot_names]
        self.dynamic = not jit  # XLA needs a fixed-size path buffer
        self.unroll = 1 if jit else _UNROLL
        # autograph=False: the loop is written with tf.while_loop; converting the optimizer's
        # Python on every new runner cost more than the runs themselves in `tfopt bench`.
        self.compiled = tf.function(self.loop, jit_compile=jit, autograph=False)
        self.concrete = None  # traced on first use; calling it directly skips tf.function's dispatch

    def run(self, x0, max_iters, hyper, tols, eager, row: int = 0) -> dict:
        args = (x0, tf.constant(max_iters, tf.int32), hyper, tols["tol"], tols["grad_tol"], tf.constant(row))
        if eager:
            return self.loop(*args)
        if self.concrete is None:
            self.concrete = self.compiled.get_concrete_function(*args)
        with _without_graph_rewrites():
            return self.concrete(*args)

    def loss(self, x, row=None) -> tf.Tensor:
        """The loss of each row of ``x`` ([n, dim]); by row: of ``x`` ([1, dim]) as row ``row`` of the starts."""
        if not self.by_row or self.row_alone:
            return _per_row(self.loss_fn(x), self.n, self.dim)
        batch = tf.tensor_scatter_nd_update(self.starts, [[row]], x)
        return tf.reshape(_per_row(self.loss_fn(batch), self.total, self.dim)[row], [1])

    def loop(self, x0, max_iters, hyper, tol, grad_tol, row) -> dict:
        """Set the hyperparameters, reset the state, run the loop to the end, return the outcome."""
        x, opt, n, dtype = self.x, self.optimizer, self.n, self.x.dtype
        for name, value in hyper.items():
            getattr(opt, name).assign(value)
        if self.by_row:
            if self.starts is not None:
                self.starts.assign(x0)
            x.assign(x0[row])
        else:
            x.assign(x0)

        def rows(t):  # x's value (or gradient) as [n, dim]
            return tf.reshape(t, [1, self.dim]) if self.by_row else t

        for slot in self.slots:
            slot.assign(tf.zeros_like(slot))
        opt.iterations.assign(0)
        if self.explode_on == "nan":
            ok = lambda t: ~tf.math.is_nan(t)  # noqa: E731
        else:
            ok = tf.math.is_finite

        def iteration(i, status, iterations, records):
            """Iteration i + 1 for every row; rows that stopped (or i >= max_iters) are left as they are."""
            running = tf.equal(status, RUNNING) & (i < max_iters)
            x_old = rows(tf.convert_to_tensor(x))
            with tf.GradientTape() as tape:
                loss = self.loss(rows(x), row)
            grad = rows(tape.gradient(loss, x))  # of the rows' summed loss: row r gets d loss_r / d x_r
            finite = tf.reduce_all(ok(grad), axis=-1) & ok(loss)
            exploded, updating = running & ~finite, running & finite
            if self.use_grad_tol:
                small = updating & (_norm(grad) <= tf.cast(grad_tol, dtype))
                updating &= ~small
            if self.clipnorm is not None:
                grad = tf.clip_by_norm(grad, tf.cast(self.clipnorm, dtype), axes=[1])
            opt.apply_gradients([(tf.reshape(grad, x.shape) if self.by_row else grad, x)])
            x_new = tf.raw_ops.Select(condition=updating, x=rows(tf.convert_to_tensor(x)), y=x_old)  # stopped rows
            x.assign(tf.reshape(x_new, x.shape) if self.by_row else x_new)  # stay frozen
            done = tf.reduce_all(tf.equal(x_new, x_old), axis=-1)
            if self.use_tol:
                done |= _norm(x_new - x_old) <= tf.cast(tol, dtype)
            # Running rows have status 0 and at most one of these holds: add the new codes.
            status += CONVERGED * _int(updating & done) + EXPLODED * _int(exploded)
            if self.use_grad_tol:
                status += CONVERGED_BEFORE_UPDATE * _int(small)
            iterations += _int(running)
            if self.record:  # x after update i + 1, loss before it
                records = (records[0].write(i, x_new), records[1].write(i, loss))
            return i + 1, status, iterations, records

        def body(i, status, iterations, *records):
            for _ in range(self.unroll):  # several iterations per trip amortize the loop's own ops
                i, status, iterations, records = iteration(i, status, iterations, records)
            return (i, status, iterations, *records)

        def keep_going(i, status, *_):
            return (i < max_iters) & tf.reduce_any(tf.equal(status, RUNNING))

        records = ()
        if self.record:  # XLA needs a fixed size; otherwise grow to the iterations actually run
            size = 0 if self.dynamic else max_iters
            records = (tf.TensorArray(dtype, size, dynamic_size=self.dynamic, element_shape=[n, self.dim]),
                       tf.TensorArray(dtype, size, dynamic_size=self.dynamic, element_shape=[n]))
        state = (tf.constant(0), tf.fill([n], RUNNING), tf.zeros([n], tf.int32), *records)
        _, status, iterations, *records = tf.while_loop(keep_going, body, state)
        x_final = rows(x.read_value())
        out = {"status": status, "iterations": iterations, "x_final": x_final, "loss_final": self.loss(x_final, row)}
        if self.record:
            out["path"], out["losses_before"] = records[0].stack(), records[1].stack()
        return out


def _int(mask: tf.Tensor) -> tf.Tensor:
    return tf.cast(mask, tf.int32)


def _norm(t: tf.Tensor) -> tf.Tensor:
    """Euclidean norm of each row."""
    return tf.sqrt(tf.reduce_sum(tf.square(t), axis=-1))


_NO_REWRITES: dict = {}


@contextlib.contextmanager
def _without_graph_rewrites():
    """Run tf.functions called in this block (this thread) without grappler's rewrites.

    Grappler rewrites change last bits relative to eager execution: its
    arithmetic optimizer turns ``Pow(x, 3)`` into ``x * Square(x)`` and
    ``Pow(x, 2)`` into ``Square(x)`` (``ConvertPowStage``), which changes the
    gradient of the guide's ``2*x**4 + 3*x**3``; constant folding reassociates
    sums with a constant (``ConstantPushDown``): ``(a + b) + 2`` into
    ``a + (b + 2)`` (the guide's loss values) and ``(x*x + y) - 11`` into
    ``x*x + (y - 11)`` (Himmelblau's gradients). Switching off only the
    arithmetic optimizer is not enough. With grappler off, the graph runs the
    traced ops with the same kernels as eager. The config travels with each function call (its
    ``config_proto`` attribute; the runtime instantiates a function once per
    config), so setting it for this thread around the call scopes it to our
    calls: global options (``tf.config.optimizer``) and other threads are
    untouched, and the old options are restored exactly.
    """
    ctx = context.context()
    old = ctx.function_call_options
    key = (old.executor_type, old.config_proto_serialized)
    if key not in _NO_REWRITES:
        config = config_pb2.ConfigProto.FromString(old.config_proto_serialized)
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        _NO_REWRITES[key] = context.FunctionCallOptions(old.executor_type, config)
    ctx.function_call_options = _NO_REWRITES[key]
    try:
        yield
    finally:
        ctx.function_call_options = old
