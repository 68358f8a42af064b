"""The native multi-tensor ops (``tfopt.kernels.native``) against the plain-ops reference (``fused=False``).

Every rule must match the reference bit for bit, slots included, on float32 and float64, on one
large variable and on many small ones (the work is split across variables and threads), with
special values, and wherever a step is made: eagerly or in a ``tf.function``. What the ops do not
take (half precision, per-row hyperparameters, GradientDescent's sparse rows, XLA) runs
TensorFlow's kernels; a failed build falls back to them with a warning.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from rules import FACTORIES, assert_bitwise_equal, make

from tfopt.kernels import native

NATIVE_OPS = {
    "gradient_descent": "TfoptApplyGradientDescent",
    "momentum": "TfoptApplyMomentum",
    "nesterov": "TfoptApplyMomentum",
    "adam": "TfoptApplyAdam",
}
each_rule = pytest.mark.parametrize("name", list(FACTORIES))
# one variable big enough to be split over threads, a scalar, odd sizes, and many small ones
SHAPES = [(300_001,), (), (7,), (3, 5), (2, 3, 4)] + [(13,)] * 40


def run(opt, dtype, steps=5, shapes=SHAPES, seed=0, compiled=False):
    """Apply ``steps`` random steps to fresh variables (hyperparameters change after step 2)."""
    rng = np.random.default_rng(seed)
    variables = [tf.Variable(rng.normal(size=s).astype(dtype)) for s in shapes]
    apply = tf.function(opt.apply_gradients) if compiled else opt.apply_gradients
    for step in range(steps):
        if step == 2:
            opt.learning_rate = 0.02
            for key, value in {"momentum": 0.5, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6}.items():
                if hasattr(opt, key):
                    setattr(opt, key, value)
        grads = [tf.constant(rng.normal(size=s).astype(dtype)) for s in shapes]
        apply(list(zip(grads, variables)))
    return [v.numpy() for v in variables] + [opt.get_slot(v, s).numpy() for v in variables for s in opt.slot_names]


def op_types(opt, variables, grads, **function_kwargs):
    step = tf.function(lambda: opt.apply_gradients(zip(grads, variables)), **function_kwargs)
    return [op.type for op in step.get_concrete_function().graph.get_operations()]


@pytest.fixture(scope="module", autouse=True)
def native_ops_are_built():
    if native.load() is None:
        found = native.diagnostics()
        pytest.fail(f"tfopt's native ops are not loaded: {found['error']}"
                    + (f" (full log: {found['log']})" if found["log"] else "") + "; `tfopt doctor` says more",
                    pytrace=False)


# ------------------------------------------------------------- which path runs
@each_rule
def test_default_step_is_one_native_op_per_dtype(name):
    variables = [tf.Variable(tf.ones([3], dtype)) for dtype in (tf.float32, tf.float64, tf.float32, tf.float16)]
    grads = [tf.ones_like(v) for v in variables]
    ops = op_types(make(name), variables, grads)
    assert ops.count(NATIVE_OPS[name]) == 2  # float32 and float64; float16 takes the reference ops
    assert not [op for op in ops if op.startswith("ResourceApply")]


@each_rule
@pytest.mark.parametrize("fused", [True, False])
def test_fused_flag(name, fused):
    """fused=False is the plain-ops reference; fused=True asks for TensorFlow's inexact Adam kernel."""
    ops = op_types(make(name, fused=fused), [tf.Variable([1.0, 2.0])], [tf.constant([0.5, -0.5])])
    assert (NATIVE_OPS[name] in ops) == (fused and name != "adam")
    assert ("ResourceApplyAdam" in ops) == (fused and name == "adam")


@each_rule
def test_xla_uses_tensorflow_kernels(name):
    x, g = tf.Variable([1.0, 2.0]), tf.constant([0.5, -0.5])
    assert NATIVE_OPS[name] not in op_types(make(name), [x], [g], jit_compile=True)
    opt = make(name)
    tf.function(lambda: opt.apply_gradients([(g, x)]), jit_compile=True)()
    assert not np.array_equal(x.numpy(), [1.0, 2.0])


@each_rule
def test_hyperparameter_with_a_value_per_row_takes_the_reference(name):
    key = {"momentum": "momentum", "nesterov": "momentum", "adam": "beta_1"}.get(name, "learning_rate")
    opt = make(name, **{key: tf.Variable([[0.1], [0.5]], dtype=tf.float64)})
    assert NATIVE_OPS[name] not in op_types(opt, [tf.Variable(tf.ones((2, 3)))], [tf.ones((2, 3))])


# ---------------------------------------------------------------- the numbers
@each_rule
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_native_equals_the_reference_bit_for_bit(name, dtype, compiled):
    assert_bitwise_equal(run(make(name), dtype, compiled=compiled), run(make(name, fused=False), dtype))


@each_rule
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_native_equals_the_reference_with_special_values(name, dtype, compiled):
    """Signed zeros, huge, tiny, subnormal and non-finite gradients: still bit for bit."""
    tiny = np.finfo(dtype).smallest_subnormal
    g = tf.constant(np.array([0.0, -0.0, 1e30, -1e-30, 3.0, np.inf, np.nan, tiny, -3 * tiny], dtype))
    results = []
    for fused in (None, False):
        opt = make(name, fused=fused)
        x = tf.Variable(np.array([1.0, -1.0, 0.0, -0.0, 2.0, 5.0, 1.0, 0.0, 1e-38], dtype))
        apply = tf.function(opt.apply_gradients) if compiled and fused is None else opt.apply_gradients
        for _ in range(3):
            apply([(g, x)])
        results.append([x.numpy()] + [opt.get_slot(x, s).numpy() for s in opt.slot_names])
    assert_bitwise_equal(*results)


@each_rule
def test_many_small_and_empty_variables(name):
    """Thousands of segments, so that work shards start and end inside small ones; empty ones skipped."""
    shapes = [(0,), (97,), (0, 3)] + [(97,)] * 400 + [(0,)]
    assert_bitwise_equal(run(make(name), "float32", steps=3, shapes=shapes),
                         run(make(name, fused=False), "float32", steps=3, shapes=shapes))


@each_rule
def test_gradient_of_another_dtype_is_cast_as_in_the_reference(name):
    results = []
    for fused in (None, False):
        opt, x = make(name, fused=fused), tf.Variable([1.0, -2.0, 3.0])
        for _ in range(3):
            opt.apply_gradients([(tf.constant([0.1, 0.2, -0.3], tf.float64), x)])
        results.append([x.numpy()] + [opt.get_slot(x, s).numpy() for s in opt.slot_names])
    assert_bitwise_equal(*results)


@pytest.mark.parametrize("name", ["momentum", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sparse_gradients_are_densified_into_the_native_op(name, dtype):
    values = tf.constant(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype))
    rows = tf.IndexedSlices(values, tf.constant([2, 0, 2]), [4, 2])
    assert NATIVE_OPS[name] in op_types(make(name), [tf.Variable(tf.ones((4, 2), dtype))], [rows])
    sparse, dense = make(name), make(name, fused=False)
    a, b = tf.Variable(tf.ones((4, 2), dtype)), tf.Variable(tf.ones((4, 2), dtype))
    for _ in range(3):
        sparse.apply_gradients([(rows, a)])
        dense.apply_gradients([(tf.convert_to_tensor(rows), b)])
    assert_bitwise_equal([a.numpy()] + [sparse.get_slot(a, s).numpy() for s in sparse.slot_names],
                         [b.numpy()] + [dense.get_slot(b, s).numpy() for s in dense.slot_names])


def test_gradient_descent_keeps_its_sparse_scatter():
    rows = tf.IndexedSlices(tf.constant([[1.0, 2.0]]), tf.constant([1]), [4, 2])
    ops = op_types(make("gradient_descent"), [tf.Variable(tf.ones((4, 2)))], [rows])
    assert "TfoptApplyGradientDescent" not in ops and "ResourceScatterSub" in ops


@each_rule
def test_a_value_read_before_the_step_keeps_its_value(name):
    """The op writes in place, but never into a buffer that a tensor read earlier still holds."""
    x, opt, g = tf.Variable([1.0, 2.0, 3.0]), make(name), tf.constant([1.0, 1.0, 1.0])
    opt.apply_gradients([(g, x)])
    held = [x.read_value()] + [opt.get_slot(x, s).read_value() for s in opt.slot_names]
    values = [t.numpy().copy() for t in held]
    opt.apply_gradients([(g, x)])
    assert_bitwise_equal([t.numpy() for t in held], values)
    assert not np.array_equal(x.numpy(), values[0])


@each_rule
def test_reads_in_the_same_tf_function_are_ordered_around_the_op(name):
    x, opt, g = tf.Variable([1.0, 2.0, 3.0]), make(name), tf.constant([1.0, 1.0, 1.0])

    @tf.function
    def step():
        before = x.read_value()
        opt.apply_gradients([(g, x)])
        return before, x.read_value()

    before, after = step()
    np.testing.assert_array_equal(before.numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(after.numpy(), x.numpy())
    assert not np.array_equal(after.numpy(), before.numpy())


@each_rule
def test_variables_on_two_cpu_devices_get_one_op_each(name):
    """conftest.py splits the CPU into two logical devices; each op runs where its variables live."""
    with tf.device("/cpu:0"):
        a = tf.Variable([1.0, 2.0])
    with tf.device("/cpu:1"):
        b = tf.Variable([3.0, 4.0])
    grads = [tf.constant([0.5, 0.5]), tf.constant([1.0, -1.0])]
    assert op_types(make(name), [a, b], grads).count(NATIVE_OPS[name]) == 2
    reference = [tf.Variable(a), tf.Variable(b)]
    opt, ref_opt = make(name), make(name, fused=False)
    for _ in range(2):
        opt.apply_gradients(zip(grads, [a, b]))
        ref_opt.apply_gradients(zip(grads, reference))
    for slot in opt.slot_names:  # slots live beside their variable
        assert opt.get_slot(b, slot).device == b.device and opt.get_slot(a, slot).device == a.device
    assert_bitwise_equal([a.numpy(), b.numpy()], [v.numpy() for v in reference])


def test_mirrored_variable_stepped_outside_its_scope_updates_every_replica(mirrored_strategy):
    strategy = mirrored_strategy
    with strategy.scope():
        x = tf.Variable([1.0, 2.0])
        opt = make("adam")
    opt.apply_gradients([(tf.constant([1.0, 1.0]), x)])
    replicas = [v.numpy() for v in strategy.experimental_local_results(x)]
    reference = tf.Variable([1.0, 2.0])
    make("adam", fused=False).apply_gradients([(tf.constant([1.0, 1.0]), reference)])
    assert_bitwise_equal(replicas, [reference.numpy()] * 2)


def test_non_scalar_hyperparameter_is_an_error_not_a_crash():
    x = tf.Variable([1.0, 2.0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be a scalar"):
        native.gradient_descent([x], [tf.constant([1.0, 1.0])], tf.constant([0.1, 0.1]))


# --------------------------------------------------------------- the fallback
def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("TFOPT_NATIVE", "0")
    assert native.load() is None
    ops = op_types(make("momentum"), [tf.Variable([1.0])], [tf.constant([1.0])])
    assert "TfoptApplyMomentum" not in ops and "ResourceApplyMomentum" in ops
