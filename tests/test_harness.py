"""The convergence harness: the guide's outcomes, compiled == eager, batches, bad input."""

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import hashlib

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.eager import context

import tfopt
from tfopt.lab import problems
from tfopt.lab.harness import RECORD_LIMIT, BatchResult, ConvergenceResult, convergence_test

OPTIMIZERS = {
    "gd": lambda lr: tfopt.GradientDescent(learning_rate=lr),
    "momentum": lambda lr: tfopt.Momentum(learning_rate=lr, momentum=0.7),
    "adam": lambda lr: tfopt.Adam(learning_rate=lr, epsilon=1e-7),
}
RATES = [1e-3, 1e-2, 1e-1]


def guide_loss(x):
    """The guide's loss, verbatim: ``**`` is ``tf.pow``, whose gradient calls ``Pow(x, 3)`` and ``Pow(x, 2)``."""
    return 2 * (x**4) + 3 * (x**3) + 2


def bits(a):
    return np.asarray(a).view(np.uint32 if np.asarray(a).dtype == np.float32 else np.uint64)


def assert_same_bits(a, b):
    assert a.shape == b.shape
    np.testing.assert_array_equal(bits(a), bits(b))


def digest(path):
    return hashlib.sha256(np.asarray(path, "<f4").tobytes()).hexdigest()[:16]


# The guide's nine runs (quartic, x0 = 2, float32, max_iters = 2000), produced by running the
# guide's own code (seed 004_8be77ef85f5dc8f5, classes and convergence_test copied verbatim)
# with TF 2.21 on CPU: its printed outcome, the last x it reached (IEEE bits; for the exploded
# runs the x whose gradient was NaN), and sha256[:16] of its float32 path. The guide returns []
# for an exploded run; its path up to the explosion comes from the same loop without the early
# return.
GUIDE = {
    ("gd", 1e-3): ("max_iters", 2000, "3d43267b", "c4a44b3750f10402"),
    ("gd", 1e-2): ("max_iters", 2000, "3bb0a59a", "005a4ab8bf277d6d"),
    ("gd", 1e-1): ("exploded", 6, "ff800000", "8b37be6601f1d879"),
    ("momentum", 1e-3): ("max_iters", 2000, "3c7bfdd6", "21bb6b5ef477c7b7"),
    ("momentum", 1e-2): ("converged", 80, "bf8ffff5", "44e5bec498179037"),
    ("momentum", 1e-1): ("exploded", 6, "ff800000", "b3f109dc800b38bc"),
    ("adam", 1e-3): ("max_iters", 2000, "3f5285da", "145d438f6c9a1da0"),
    ("adam", 1e-2): ("max_iters", 2000, "3d8a081c", "fab14f18ed142f7d"),
    ("adam", 1e-1): ("converged", 1156, "bf8fffe7", "c71181aec82e12bd"),
}
guide_runs = pytest.mark.parametrize("name, lr", list(GUIDE), ids=[f"{n}-{lr:g}" for n, lr in GUIDE])


# ------------------------------------------------------------- the guide's outcomes
@guide_runs
def test_guide_outcomes_bit_for_bit(name, lr):
    """With the guide's loss and its NaN-only check, every run equals the guide's: outcome and every bit of the path."""
    status, iterations, x_hex, path_digest = GUIDE[name, lr]
    r = convergence_test(OPTIMIZERS[name](lr), guide_loss, init=2.0, max_iters=2000, explode_on="nan")
    assert (r.status, r.iterations) == (status, iterations)
    assert format(int(bits(r.x_final)[0]), "08x") == x_hex
    assert digest(r.path[:, 0]) == path_digest
    assert len(r.path) == (iterations - 1 if status == "exploded" else iterations)


@pytest.mark.parametrize("name", ["gd", "momentum"])
def test_default_rule_catches_the_infinite_gradient_one_step_earlier(name):
    """At iteration 5 the gradient is +Inf (x ~ 2.8e22): the guide misses it and steps to -Inf."""
    r = convergence_test(OPTIMIZERS[name](0.1), guide_loss, init=2.0)
    assert (r.status, r.iterations, len(r.path)) == ("exploded", 5, 4)
    assert r.x_final[0] == r.path[-1, 0] and 2e22 < r.x_final[0] < 3e22
    assert r.loss_final == np.inf


@guide_runs
def test_problems_quartic_gives_the_guide_outcomes(name, lr):
    """tfopt.problems.quartic: the guide's status and iteration count; where it ends to float32 rounding.

    (Its loss may be written with products, which the guide's ``tf.pow`` does not match bit for bit.)
    """
    status, iterations, x_hex, _ = GUIDE[name, lr]
    r = convergence_test(OPTIMIZERS[name](lr), problems.quartic, init=2.0, max_iters=2000, explode_on="nan")
    assert (r.status, r.iterations) == (status, iterations)
    guide_x = np.array([int(x_hex, 16)], np.uint32).view(np.float32)
    np.testing.assert_allclose(r.x_final, guide_x, rtol=1e-6)


def test_himmelblau_descent_from_the_default_start():
    r = convergence_test(tfopt.GradientDescent(0.01), "himmelblau")
    assert (r.status, r.iterations) == ("converged", 34)
    np.testing.assert_allclose(r.nearest_minimum, [-3.779310253377747, -3.2831859912861696])
    assert r.distance_to_minimum < 1e-6 and r.loss_final == 0.0
    r = convergence_test(tfopt.Adam(0.1), problems.himmelblau, init=[-4.0, 0.0])
    assert (r.status, r.iterations) == ("converged", 278)
    assert r.distance_to_minimum < 1e-5


# -------------------------------------------------------------- compiled == eager
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_compiled_equals_eager_on_the_guide_runs(name):
    """The compiled loop reproduces the eager loop bit for bit (path, losses, finals), grappler or not.

    The nine runs go as one learning-rate sweep per optimizer (rows equal single runs: tested below),
    cut at 100 iterations to keep eager time short; with grappler on, gd-0.01 differs from the 2nd
    update, momentum-0.01 from the 9th, adam-0.1 from the 57th (and losses from the 1st).
    """
    kw = dict(init=2.0, max_iters=100, learning_rate=RATES, explode_on="nan")
    compiled = convergence_test(OPTIMIZERS[name](1.0), guide_loss, **kw)
    eager = convergence_test(OPTIMIZERS[name](1.0), guide_loss, eager=True, **kw)
    assert_batches_equal(compiled, eager)


@pytest.mark.parametrize("make, max_iters", [(lambda: tfopt.GradientDescent(0.01), 100), (lambda: tfopt.Adam(0.1), 60)])
def test_compiled_equals_eager_on_a_himmelblau_descent(make, max_iters):
    compiled = convergence_test(make(), "himmelblau", max_iters=max_iters)
    assert_results_equal(compiled, convergence_test(make(), "himmelblau", max_iters=max_iters, eager=True))


def test_grappler_options_are_restored():
    before_options = tf.config.optimizer.get_experimental_options()
    before_call_options = context.context().function_call_options
    convergence_test(tfopt.Adam(0.1), problems.quartic, max_iters=5)
    assert tf.config.optimizer.get_experimental_options() == before_options
    assert context.context().function_call_options is before_call_options


def assert_results_equal(a, b):
    assert (a.status, a.iterations) == (b.status, b.iterations)
    for field in ("path", "losses", "x_final"):
        assert_same_bits(getattr(a, field), getattr(b, field))
    assert_same_bits(np.float32(a.loss_final), np.float32(b.loss_final))


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert_results_equal(ra, rb)


# ----------------------------------------------------------------------- batches
def test_learning_rate_sweep_rows_equal_single_runs():
    sweep = convergence_test(tfopt.Adam(), problems.quartic, init=2.0, max_iters=400, learning_rate=RATES)
    assert isinstance(sweep, BatchResult) and len(sweep) == 3
    for row, lr in zip(sweep, RATES):
        assert_results_equal(row, convergence_test(tfopt.Adam(lr), problems.quartic, init=2.0, max_iters=400))


def test_a_users_learning_rate_variable_per_row_equals_the_sweep():
    rates = tf.Variable(np.array(RATES)[:, None])  # float64 [3, 1], read (not changed) by the runs
    init = np.full((3, 1), 2.0, np.float32)
    by_variable = convergence_test(tfopt.Adam(rates), problems.quartic, init=init, max_iters=300)
    sweep = convergence_test(tfopt.Adam(0.5), problems.quartic, init=init, max_iters=300, learning_rate=RATES)
    assert_batches_equal(by_variable, sweep)
    assert_results_equal(convergence_test(tfopt.Adam(0.5), problems.quartic, max_iters=300, learning_rate=0.01),
                         convergence_test(tfopt.Adam(0.01), problems.quartic, max_iters=300))


def test_batch_rows_equal_single_runs_and_stop_on_their_own():
    starts = np.array([[-4.0, 0.0], [0.0, 0.0], [4.0, 4.0], [-0.270845, -0.923039], [1e20, 1e20]], np.float32)
    opt = tfopt.Momentum(0.01, momentum=0.7)
    batch = convergence_test(opt, problems.himmelblau, init=starts, max_iters=300)
    assert batch.iterations.shape == (5,) and batch.x_final.shape == (5, 2) and batch.loss_final.shape == (5,)
    assert batch.status[-1] == "exploded" and batch.iterations[-1] == 1 and len(batch[-1].path) == 0
    assert len(set(batch.iterations.tolist())) > 2  # rows stopped at different iterations
    for i, start in enumerate(starts):
        assert_results_equal(batch[i], convergence_test(opt, problems.himmelblau, init=start, max_iters=300))


def test_clipnorm_is_per_row():
    starts = np.array([[-4.0, 0.0], [4.0, 4.0], [0.5, -3.0]], np.float32)
    opt = tfopt.Adam(0.05, clipnorm=1.0)
    batch = convergence_test(opt, "himmelblau", init=starts, max_iters=100)
    for i, start in enumerate(starts):
        assert_results_equal(batch[i], convergence_test(opt, "himmelblau", init=start, max_iters=100))


def _clipped_adam():
    t = tfopt.transforms
    return tfopt.chain(t.clip_by_global_norm(1.0), t.scale_by_adam(), t.scale_by_learning_rate(0.05))


NOT_ELEMENTWISE = {"Lamb": lambda: tfopt.Lamb(0.05), "Adafactor": lambda: tfopt.Adafactor(0.05),
                   "Muon": lambda: tfopt.Muon(0.05), "clip_by_global_norm chain": _clipped_adam,
                   "Lookahead": lambda: tfopt.Lookahead(tfopt.Adam(0.05))}


@pytest.mark.parametrize("name", list(NOT_ELEMENTWISE))
def test_rows_stay_independent_runs_for_rules_that_are_not_elementwise(name):
    """Norms, factored moments, a global norm or a wrapper would couple the rows of one [n, dim] variable."""
    opt = NOT_ELEMENTWISE[name]()
    starts = np.array([[-4.0, 0.0], [4.0, 4.0], [0.5, -3.0]], np.float32)
    rates = [None] * 3 if name == "Lookahead" else [0.05, 0.1, 0.02]  # (a wrapper's rate is its inner rule's)
    batch = convergence_test(opt, "himmelblau", init=starts, max_iters=60,
                             learning_rate=None if name == "Lookahead" else rates)
    for i, (start, lr) in enumerate(zip(starts, rates)):
        assert_results_equal(batch[i], convergence_test(opt, "himmelblau", init=start, max_iters=60,
                                                        learning_rate=lr))
    assert len(set(batch.iterations.tolist())) > 1 or len({tuple(x) for x in batch.x_final}) == 3


def test_rows_of_a_rule_that_is_not_elementwise_equal_single_runs_under_xla():
    starts = np.array([[-4.0, 0.0], [4.0, 4.0], [0.5, -3.0]], np.float32)
    batch = convergence_test(tfopt.Lamb(0.05), "himmelblau", init=starts, max_iters=80, jit_compile=True)
    for i, start in enumerate(starts):
        single = convergence_test(tfopt.Lamb(0.05), "himmelblau", init=start, max_iters=80, jit_compile=True)
        np.testing.assert_array_equal(batch[i].x_final, single.x_final)


@pytest.mark.parametrize("name", ["Lamb", "Muon"])
def test_a_rule_that_is_not_elementwise_sees_x_as_a_vector(name):
    """One run equals the guide's loop on a variable of shape [dim] (Muon: its AdamW path, not a 1 x 2 matrix)."""
    opt = NOT_ELEMENTWISE[name]()
    result = convergence_test(opt, "himmelblau", init=[-4.0, 0.0], max_iters=30, eager=True)
    x = tf.Variable([-4.0, 0.0])
    fresh = type(opt).from_config(opt.get_config())
    for _ in range(30):
        with tf.GradientTape() as tape:
            loss = problems.himmelblau.loss(x[None])[0]
        fresh.apply_gradients([(tape.gradient(loss, x), x)])
    np.testing.assert_array_equal(result.x_final, x.numpy())


def test_a_wrappers_learning_rate_sweep_sets_its_inner_rule():
    starts = np.array([[-4.0, 0.0], [4.0, 4.0]], np.float32)
    rates = [0.05, 0.1]
    batch = convergence_test(tfopt.Lookahead(tfopt.Adam(0.5)), "himmelblau", init=starts, max_iters=60,
                             learning_rate=rates)
    for i, (start, lr) in enumerate(zip(starts, rates)):
        single = convergence_test(tfopt.Lookahead(tfopt.Adam(lr)), "himmelblau", init=start, max_iters=60)
        assert_results_equal(batch[i], single)
        assert_results_equal(single, convergence_test(tfopt.Lookahead(tfopt.Adam(0.5)), "himmelblau", init=start,
                                                      max_iters=60, learning_rate=lr))
    assert not np.array_equal(batch[0].x_final, convergence_test(tfopt.Lookahead(tfopt.Adam(0.5)), "himmelblau",
                                                                 init=starts[0], max_iters=60).x_final)


def test_elementwise_is_decided_from_the_rule():
    from tfopt.kernels.compiler import elementwise

    assert all(elementwise(cls()) for name, cls in tfopt.RULES.items() if name not in ("Lamb", "Adafactor", "Muon"))
    assert not any(elementwise(make()) for make in NOT_ELEMENTWISE.values())


def test_big_batch_is_one_call_without_paths():
    """A 55 x 55 grid of Himmelblau starts: every run converges to one of the four minima."""
    grid = np.stack(np.meshgrid(np.linspace(-5, 5, 55), np.linspace(-5, 5, 55)), -1).reshape(-1, 2)
    max_iters = RECORD_LIMIT // (len(grid) * 3) + 1  # just over the limit: paths are not recorded
    batch = convergence_test(tfopt.Adam(0.05), "himmelblau", init=grid.astype(np.float32), max_iters=max_iters)
    assert len(batch) == 3025 and batch[0].path is None and batch[0].losses is None
    assert (batch.status == "converged").mean() > 0.99
    found = {tuple(np.round(m, 3)) for m in batch.nearest_minimum[batch.distance_to_minimum < 1e-3]}
    assert len(found) == 4


# ---------------------------------------------------------------- result fields
def test_result_fields():
    r = convergence_test(tfopt.Momentum(0.01, momentum=0.7), problems.quartic)
    assert isinstance(r, ConvergenceResult)
    assert r.path.shape == (r.iterations, 1) and r.losses.shape == (r.iterations,)
    assert_same_bits(r.path[-1], r.x_final)
    assert_same_bits(r.losses, problems.quartic.loss(tf.constant(r.path)).numpy())  # losses[i] = loss(path[i])
    assert r.losses[-1] == r.loss_final and r.wall_time > 0
    np.testing.assert_allclose(r.nearest_minimum, [-1.125])
    assert r.distance_to_minimum == pytest.approx(abs(r.x_final[0] + 1.125))
    assert "converged" in repr(r)


def test_tolerances_stop_earlier():
    base = convergence_test(tfopt.GradientDescent(0.01), "himmelblau", max_iters=500)
    by_step = convergence_test(tfopt.GradientDescent(0.01), "himmelblau", max_iters=500, tol=1e-3)
    by_grad = convergence_test(tfopt.GradientDescent(0.01), "himmelblau", max_iters=500, grad_tol=1e-1)
    assert by_step.status == by_grad.status == "converged"
    assert by_step.iterations < base.iterations and by_grad.iterations < base.iterations
    assert np.linalg.norm(by_step.path[-1] - by_step.path[-2]) <= 1e-3
    assert len(by_grad.path) == by_grad.iterations - 1  # stopped before its update


def test_float64_runs_in_float64():
    r = convergence_test(tfopt.GradientDescent(0.01), problems.himmelblau, init=np.array([-4.0, 0.0]), max_iters=300)
    assert r.x_final.dtype == r.path.dtype == np.float64 and r.status == "converged"
    assert r.distance_to_minimum < 1e-12


def test_callable_loss_and_scalar_or_row_shapes():
    r = convergence_test(tfopt.GradientDescent(0.1), lambda x: tf.reduce_sum((x - 3.0) ** 2), init=[0.0, 0.0])
    assert r.status == "converged" and r.nearest_minimum is None and r.distance_to_minimum is None
    np.testing.assert_allclose(r.x_final, [3.0, 3.0], rtol=1e-6)


# ------------------------------------------------------- caching, optimizer untouched
def test_no_retrace_and_the_users_optimizer_is_untouched():
    traces = []

    def loss(x):
        traces.append(1)  # Python runs only while tracing
        return problems.quartic.loss(x)

    opt = tfopt.Adam(0.01)
    first = convergence_test(opt, loss, init=2.0, max_iters=50)
    traced = len(traces)
    again = convergence_test(tfopt.Adam(0.01), loss, init=2.0, max_iters=50)
    other = convergence_test(tfopt.Adam(0.1, beta_1=0.8), loss, init=-1.0, max_iters=70)
    assert traced > 0 and len(traces) == traced
    assert_results_equal(first, again)
    assert other.iterations == 70 and not np.array_equal(other.path[:50], first.path)
    assert int(opt.iterations) == 0
    with pytest.raises(KeyError):
        opt.get_slot(tf.Variable([[0.0]]), "m")
    assert opt.get_config()["learning_rate"] == 0.01


def test_xla_gives_the_guide_outcomes():
    """XLA contracts multiply-adds, so bits may differ; the outcomes do not."""
    sweep = convergence_test(tfopt.Adam(), guide_loss, init=2.0, learning_rate=RATES, explode_on="nan",
                             jit_compile=True)
    for row, lr in zip(sweep, RATES):
        status, iterations, x_hex, _ = GUIDE["adam", lr]
        assert (row.status, row.iterations) == (status, iterations)
        np.testing.assert_allclose(row.x_final, np.array([int(x_hex, 16)], np.uint32).view(np.float32), rtol=1e-6)


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(problem="himmelblau", init=[1.0, 2.0, 3.0]), r"init has shape \[3\].*'himmelblau' needs \[2\]"),
        (dict(problem="himmelblau", init=np.zeros((4, 3))), r"init has shape \[4, 3\]"),
        (dict(problem="himmelblau", init=1.0), "scalar init"),
        (dict(problem="quartic", max_iters=0), "max_iters"),
        (dict(problem="quartic", max_iters=-5), "max_iters"),
        (dict(problem="quartic", max_iters=2.5), "max_iters"),
        (dict(problem="quartic", init=np.zeros((4, 1)), learning_rate=[0.1, 0.2]), "learning_rate has 2 values"),
        (dict(problem="quartic", learning_rate=-1.0), "learning_rate"),
        (dict(problem=lambda x: x * x, init=[1.0, 2.0]), r"one value per row.*\[1, 2\]"),
        (dict(problem=lambda x: x * x, init=np.zeros((3, 2))), r"one value per row"),
        (dict(problem=lambda x: tf.reduce_sum(x), init=np.zeros((3, 2))), r"one value per row"),
        (dict(problem=lambda x: x, init=None), "init is required"),
        (dict(problem="nope"), "Unknown problem"),
        (dict(problem="quartic", explode_on="inf"), "explode_on"),
        (dict(problem="quartic", tol=-1.0), "tol"),
    ],
)
def test_bad_input_fails_early_and_clearly(kwargs, match):
    problem = kwargs.pop("problem")
    with pytest.raises(ValueError, match=match):
        convergence_test(tfopt.GradientDescent(0.01), problem, **kwargs)


def test_wrong_types_fail_clearly():
    with pytest.raises(TypeError, match="tfopt optimizer"):
        convergence_test(tf.keras.optimizers.SGD(), "quartic")
    with pytest.raises(TypeError, match="problem must be"):
        convergence_test(tfopt.Adam(), 3.0)
