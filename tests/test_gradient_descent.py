"""tfopt.GradientDescent: x <- x - lr * g, checked by hand, against NumPy and against Keras's SGD."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes
from numpy.testing import assert_allclose, assert_array_equal

import tfopt

STEPS = 5


def numpy_gradient_descent(x, grads, learning_rates):
    """The rule from DESIGN.md in float64 NumPy: x <- x - lr * g, one learning rate per step."""
    x = np.array(x, dtype=np.float64)
    for g, lr in zip(grads, learning_rates):
        x = x - lr * np.asarray(g, np.float64)
    return x


# ------------------------------------------------------------------ golden steps
def test_golden_first_step():
    # lr = 0.1, x = [1, 2], g = [0.5, -1]:
    #   x - lr * g = [1 - 0.05, 2 + 0.1] = [0.95, 2.1]
    x = tf.Variable([1.0, 2.0], dtype=tf.float64)
    tfopt.GradientDescent(learning_rate=0.1).apply_gradients([(tf.constant([0.5, -1.0], tf.float64), x)])
    assert_allclose(x.numpy(), [0.95, 2.1], rtol=1e-15)


def test_golden_steps_in_binary_fractions_are_exact():
    # Every number below is a short binary fraction, so float64 arithmetic is exact.
    # step 1, lr = 0.5, g = [0.25, 1.5, -8]: x = [1, -3, 0] - [0.125, 0.75, -4] = [0.875, -3.75, 4]
    # step 2, lr = 0.25 (changed), same g:    x - [0.0625, 0.375, -2]    = [0.8125, -4.125, 6]
    x = tf.Variable([1.0, -3.0, 0.0], dtype=tf.float64)
    g = tf.constant([0.25, 1.5, -8.0], tf.float64)
    opt = tfopt.GradientDescent(learning_rate=0.5)
    opt.apply_gradients([(g, x)])
    assert_array_equal(x.numpy(), [0.875, -3.75, 4.0])
    opt.learning_rate = 0.25
    opt.apply_gradients([(g, x)])
    assert_array_equal(x.numpy(), [0.8125, -4.125, 6.0])
    assert int(opt.iterations) == 2


def test_zero_learning_rate_leaves_variable_bit_identical():
    # x - 0 * g == x exactly.
    x0 = np.random.default_rng(0).normal(size=(3, 4))
    x = tf.Variable(x0)
    tfopt.GradientDescent(learning_rate=0.0).apply_gradients([(tf.ones_like(x0), x)])
    assert_array_equal(x.numpy(), x0)


# --------------------------------------------------------- NumPy reference (hypothesis)
shapes = st.lists(array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4), min_size=1, max_size=3)
# Zero, or far from the subnormal range: TensorFlow's CPU kernels flush subnormals to zero, NumPy does not.
learning_rates = st.lists(st.just(0.0) | st.floats(1e-6, 2.0), min_size=STEPS, max_size=STEPS)


@settings(max_examples=25, deadline=None)
@given(shapes=shapes, lrs=learning_rates, seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(["float64", "float32"]))
def test_matches_numpy_reference(shapes, lrs, seed, dtype):
    """Random shapes, several variables, a new learning rate before every step."""
    rng = np.random.default_rng(seed)
    x0 = [rng.normal(size=s).astype(dtype) for s in shapes]
    grads = [[rng.normal(size=s).astype(dtype) for s in shapes] for _ in range(STEPS)]
    variables = [tf.Variable(x) for x in x0]
    opt = tfopt.GradientDescent(learning_rate=lrs[0])
    for lr, step_grads in zip(lrs, grads):
        opt.learning_rate = lr
        opt.apply_gradients(zip([tf.constant(g) for g in step_grads], variables))
    for i, (x, variable) in enumerate(zip(x0, variables)):
        expected = numpy_gradient_descent(x, [g[i] for g in grads], lrs)
        assert variable.dtype == dtype
        if dtype == "float64":
            assert_allclose(variable.numpy(), expected, rtol=1e-12, atol=0)
        else:
            assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ low precision
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16], ids=["float16", "bfloat16"])
def test_low_precision_step_is_float32_arithmetic_rounded_once(dtype):
    """float16/bfloat16 variables are updated in float32 arithmetic (``compute_dtype``).

    The new value must be the float32 result ``x - lr * g`` rounded once to the variable's
    dtype. Rounding the step ``lr * g`` to the low precision first and then subtracting in
    low precision (double rounding) is off by one unit in the last place for ~1% of entries.
    """
    rng = np.random.default_rng(0)
    x = tf.cast(rng.normal(size=2000), dtype)
    g = tf.cast(rng.normal(size=2000), dtype)
    variable = tf.Variable(x)
    tfopt.GradientDescent(learning_rate=0.01).apply_gradients([(g, variable)])
    assert variable.dtype == dtype
    x32, g32 = tf.cast(x, tf.float32), tf.cast(g, tf.float32)
    expected = tf.cast(x32 - tf.cast(0.01, tf.float32) * g32, dtype)  # float32 arithmetic, rounded once
    got, want = tf.cast(variable, tf.float32).numpy(), tf.cast(expected, tf.float32).numpy()
    wrong = np.flatnonzero(got != want)
    assert wrong.size == 0, (
        f"{wrong.size} of {got.size} entries differ from round(x - lr*g), e.g. index {wrong[0]}: "
        f"x={x32.numpy()[wrong[0]]!r}, g={g32.numpy()[wrong[0]]!r}, got {got[wrong[0]]!r}, want {want[wrong[0]]!r}"
    )


# ------------------------------------------------------------------ sparse
def _embedding_step(table, indices, weights):
    """Gradient of sum(weights * gather(table, indices)) w.r.t. table: an IndexedSlices."""
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(weights * tf.gather(table, indices))
    return tape.gradient(loss, table)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_indexed_slices_equal_dense_and_untouched_rows_keep_their_values(dtype):
    rng = np.random.default_rng(1)
    table0 = rng.normal(size=(9, 3)).astype(dtype)
    indices = tf.constant([1, 4, 1, 7, 1, 4])  # duplicates: the dense gradient sums them
    sparse_table, dense_table = tf.Variable(table0), tf.Variable(table0)
    sparse_opt, dense_opt = tfopt.GradientDescent(0.3), tfopt.GradientDescent(0.3)
    for _ in range(3):
        weights = tf.constant(rng.normal(size=(6, 3)).astype(dtype))
        grad = _embedding_step(sparse_table, indices, weights)
        assert isinstance(grad, tf.IndexedSlices)
        sparse_opt.apply_gradients([(grad, sparse_table)])
        dense_opt.apply_gradients([(tf.convert_to_tensor(_embedding_step(dense_table, indices, weights)), dense_table)])
        assert_array_equal(sparse_table.numpy(), dense_table.numpy())
    untouched = [0, 2, 3, 5, 6, 8]
    assert_array_equal(sparse_table.numpy()[untouched], table0[untouched])
    assert not np.array_equal(sparse_table.numpy()[[1, 4, 7]], table0[[1, 4, 7]])


def test_sparse_update_is_a_scatter_without_a_dense_gradient():
    """The traced step scatters into the touched rows; no tensor of the table's size is built."""
    vocabulary, width = 1000, 4
    table = tf.Variable(tf.zeros((vocabulary, width)))
    opt = tfopt.GradientDescent(0.1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def step(indices):
        opt.apply_gradients([(_embedding_step(table, indices, 1.0), table)])

    graph = step.get_concrete_function().graph
    op_types = {op.type for op in graph.get_operations()}
    assert {"ResourceScatterSub", "ResourceScatterAdd", "ResourceScatterUpdate"} & op_types, sorted(op_types)
    full_size = [
        f"{op.type} {op.name}"
        for op in graph.get_operations()
        for out in op.outputs
        if out.shape.rank and out.shape[0] == vocabulary
    ]
    assert not full_size, f"dense tensors of the table's size in the graph: {full_size}"
    step(tf.constant([3, 5, 3]))  # and it runs: rows 3 (twice) and 5 move by -lr * 1 per use
    expected = np.zeros((vocabulary, width), np.float32)
    expected[3], expected[5] = -2 * np.float32(0.1), -np.float32(0.1)
    assert_array_equal(table.numpy(), expected)


def test_sparse_gradient_with_per_row_learning_rate_equals_dense():
    """hyperparameters.py: a learning rate may be a variable "of any shape that broadcasts
    against the variables (a learning rate per row, say)"; a sparse gradient must give the
    same result as its dense equivalent with it too."""
    rng = np.random.default_rng(2)
    table0 = rng.normal(size=(6, 2))
    per_row = tf.Variable(np.linspace(0.0, 0.5, 6).reshape(6, 1))
    indices = tf.constant([4, 0, 4])
    weights = tf.constant(rng.normal(size=(3, 2)))
    sparse_table, dense_table = tf.Variable(table0), tf.Variable(table0)
    grad = _embedding_step(sparse_table, indices, weights)
    tfopt.GradientDescent(per_row).apply_gradients([(tf.convert_to_tensor(grad), dense_table)])
    tfopt.GradientDescent(per_row).apply_gradients([(grad, sparse_table)])
    assert_array_equal(sparse_table.numpy(), dense_table.numpy())


# ------------------------------------------------------------------ Keras
def test_matches_keras_sgd_bit_for_bit_in_a_keras_training_loop(train_in_lockstep):
    """Keras's SGD without momentum subtracts ``g * lr`` in float32, as we do: identical bits."""
    history = train_in_lockstep(keras.optimizers.SGD(learning_rate=0.1), tfopt.GradientDescent(learning_rate=0.1))
    for step, (theirs, ours) in enumerate(history, start=1):
        for a, b in zip(theirs, ours):
            assert_array_equal(b, a, err_msg=f"step {step}")
    assert not np.array_equal(history[0][1][0], history[-1][1][0])  # it did train
