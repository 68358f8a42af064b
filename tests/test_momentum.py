"""tfopt.Momentum (classical and Nesterov), by hand, against NumPy and against Keras's SGD.

Rule (DESIGN.md), velocity slot d starting at 0:
    d <- lr * g + momentum * d
    x <- x - d                              classical
    x <- x - (lr * g + momentum * d)        Nesterov, with the new d
"""

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


def numpy_momentum(x, grads, learning_rates, momenta, nesterov):
    """The rule in float64 NumPy, hyperparameters per step. Returns ``(x, d)``."""
    x = np.array(x, dtype=np.float64)
    d = np.zeros_like(x)
    for g, lr, mu in zip(grads, learning_rates, momenta):
        scaled = lr * np.asarray(g, np.float64)
        d = scaled + mu * d
        x = x - (scaled + mu * d if nesterov else d)
    return x, d


# ------------------------------------------------------------------ golden steps
# lr = 0.1, momentum = 0.9, x0 = [1, 2]; g1 = [0.5, -1], g2 = [1, 1], g3 = [-2, 0.5].
#   d1 = [0.05, -0.1]
#   d2 = [0.1 + 0.045, 0.1 - 0.09]        = [0.145, 0.01]
#   d3 = [-0.2 + 0.1305, 0.05 + 0.009]    = [-0.0695, 0.059]
# classical, x <- x - d:
#   x1 = [0.95, 2.1];  x2 = [0.805, 2.09];  x3 = [0.8745, 2.031]
# Nesterov, x <- x - (lr*g + 0.9*d):
#   step 1: [0.05 + 0.045, -0.1 - 0.09]            = [0.095, -0.19]      x1 = [0.905, 2.19]
#   step 2: [0.1 + 0.1305, 0.1 + 0.009]            = [0.2305, 0.109]     x2 = [0.6745, 2.081]
#   step 3: [-0.2 - 0.06255, 0.05 + 0.0531]        = [-0.26255, 0.1031]  x3 = [0.93705, 1.9779]
GOLDEN_GRADS = [[0.5, -1.0], [1.0, 1.0], [-2.0, 0.5]]
GOLDEN_VELOCITY = [[0.05, -0.1], [0.145, 0.01], [-0.0695, 0.059]]
GOLDEN_X = {
    False: [[0.95, 2.1], [0.805, 2.09], [0.8745, 2.031]],
    True: [[0.905, 2.19], [0.6745, 2.081], [0.93705, 1.9779]],
}


@pytest.mark.parametrize("nesterov", [False, True])
def test_golden_three_steps(nesterov):
    x = tf.Variable([1.0, 2.0], dtype=tf.float64)
    opt = tfopt.Momentum(learning_rate=0.1, momentum=0.9, nesterov=nesterov)
    for g, d, want in zip(GOLDEN_GRADS, GOLDEN_VELOCITY, GOLDEN_X[nesterov]):
        opt.apply_gradients([(tf.constant(g, tf.float64), x)])
        # decimal goldens, so a few float64 roundings: within 1e-15 relative
        assert_allclose(opt.get_slot(x, "velocity").numpy(), d, rtol=1e-15)
        assert_allclose(x.numpy(), want, rtol=1e-15)


@pytest.mark.parametrize(
    "nesterov, expected",
    [
        # lr = momentum = 0.5, g = 1 every step, x0 = 1: binary fractions, exact.
        # d: 0.5, 0.5 + 0.25 = 0.75, 0.5 + 0.375 = 0.875
        (False, [0.5, -0.25, -1.125]),  # x - d
        (True, [0.25, -0.625, -1.5625]),  # x - (0.5 + 0.5 * d): steps 0.75, 0.875, 0.9375
    ],
)
def test_golden_steps_in_binary_fractions_are_exact(nesterov, expected):
    x = tf.Variable([1.0], dtype=tf.float64)
    opt = tfopt.Momentum(learning_rate=0.5, momentum=0.5, nesterov=nesterov)
    got = []
    for _ in range(3):
        opt.apply_gradients([(tf.constant([1.0], tf.float64), x)])
        got.append(x.numpy()[0])
    assert got == expected
    assert opt.get_slot(x, "velocity").numpy()[0] == 0.875


def test_zero_momentum_is_gradient_descent_bit_for_bit():
    rng = np.random.default_rng(0)
    x0, grads = rng.normal(size=(4, 3)), rng.normal(size=(3, 4, 3))
    a, b = tf.Variable(x0), tf.Variable(x0)
    momentum, gd = tfopt.Momentum(0.2, momentum=0.0, nesterov=True), tfopt.GradientDescent(0.2)
    for g in grads:
        momentum.apply_gradients([(tf.constant(g), a)])
        gd.apply_gradients([(tf.constant(g), b)])
    assert_array_equal(a.numpy(), b.numpy())


# --------------------------------------------------------- NumPy reference (hypothesis)
shapes = st.lists(array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4), min_size=1, max_size=3)
# Zero, or far from the subnormal range: TensorFlow's CPU kernels flush subnormals to zero, NumPy does not.
per_step = lambda high: st.lists(st.just(0.0) | st.floats(1e-6, high), min_size=STEPS, max_size=STEPS)  # noqa: E731


@settings(max_examples=25, deadline=None)
@given(
    shapes=shapes,
    lrs=per_step(1.0),
    momenta=per_step(0.99),
    nesterov=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(["float64", "float32"]),
)
def test_matches_numpy_reference(shapes, lrs, momenta, nesterov, seed, dtype):
    """Random shapes, several variables, new learning rate and momentum before every step."""
    rng = np.random.default_rng(seed)
    x0 = [rng.normal(size=s).astype(dtype) for s in shapes]
    grads = [[rng.normal(size=s).astype(dtype) for s in shapes] for _ in range(STEPS)]
    variables = [tf.Variable(x) for x in x0]
    opt = tfopt.Momentum(learning_rate=lrs[0], momentum=momenta[0], nesterov=nesterov)
    for lr, mu, step_grads in zip(lrs, momenta, grads):
        opt.learning_rate, opt.momentum = lr, mu
        opt.apply_gradients(zip([tf.constant(g) for g in step_grads], variables))
    tolerance = dict(rtol=1e-12, atol=0) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    for i, (x, variable) in enumerate(zip(x0, variables)):
        want_x, want_d = numpy_momentum(x, [g[i] for g in grads], lrs, momenta, nesterov)
        velocity = opt.get_slot(variable, "velocity")
        assert variable.dtype == velocity.dtype == dtype
        assert_allclose(velocity.numpy(), want_d, **tolerance)
        assert_allclose(variable.numpy(), want_x, **tolerance)


# ------------------------------------------------------------------ low precision
@pytest.mark.parametrize("dtype, ulp", [(tf.float16, 2.0**-10), (tf.bfloat16, 2.0**-7)], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_low_precision_uses_float32_arithmetic(dtype, ulp, nesterov):
    """float16/bfloat16: each step computed in float32 from the stored (rounded) state.

    The velocity slot equals, bit for bit, ``round(f32(lr)*g + f32(mu)*d)``; x (kept in
    [1, 2), where one unit in the last place is ``ulp``) is within 3 ulps of the float32
    result rounded once per step.
    """
    rng = np.random.default_rng(3)
    x = tf.cast(rng.uniform(1.25, 1.75, size=500), dtype)
    grads = [tf.cast(rng.normal(size=500), dtype) for _ in range(3)]
    variable = tf.Variable(x)
    opt = tfopt.Momentum(learning_rate=0.01, momentum=0.9, nesterov=nesterov)
    lr, mu = tf.constant(0.01, tf.float32), tf.constant(0.9, tf.float32)
    want_x, want_d = tf.cast(x, tf.float32), tf.zeros(500, tf.float32)
    for g in grads:
        opt.apply_gradients([(g, variable)])
        scaled = lr * tf.cast(g, tf.float32)
        d32 = scaled + mu * want_d
        want_d = tf.cast(tf.cast(d32, dtype), tf.float32)  # the slot is stored in the variable's dtype
        delta = scaled + mu * d32 if nesterov else d32
        want_x = tf.cast(tf.cast(want_x - delta, dtype), tf.float32)
        velocity = opt.get_slot(variable, "velocity")
        assert velocity.dtype == variable.dtype == dtype
        assert_array_equal(tf.cast(velocity, tf.float32).numpy(), want_d.numpy())
    assert_allclose(tf.cast(variable, tf.float32).numpy(), want_x.numpy(), rtol=0, atol=3 * ulp)


# ------------------------------------------------------------------ sparse
# (sparse == dense, slots included, is checked for every optimizer in test_optimizer.py)


# ------------------------------------------------------------------ Keras
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("nesterov", [False, True], ids=["classical", "nesterov"])
def test_matches_keras_sgd_bit_for_bit_in_a_keras_training_loop(train_in_lockstep, nesterov, compiled):
    """Keras's SGD keeps m = m * momentum - g * lr (= -d, negation is exact in IEEE) and adds it
    (Nesterov: adds m * momentum - g * lr); in float32 these are the same roundings as ours."""
    history = train_in_lockstep(
        keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=nesterov),
        tfopt.Momentum(learning_rate=0.1, momentum=0.9, nesterov=nesterov),
        compiled=compiled,
    )
    for step, (theirs, ours) in enumerate(history, start=1):
        for a, b in zip(theirs, ours):
            assert_array_equal(b, a, err_msg=f"step {step}")
    assert not np.array_equal(history[0][1][0], history[-1][1][0])  # it did train
