"""tfopt.Adam, by hand, against NumPy and against Keras's Adam.

Rule (DESIGN.md; the paper's Algorithm 1), slots m and v starting at 0, t the 1-based step:
    m <- b1*m + (1-b1)*g;  v <- b2*v + (1-b2)*g^2
    x <- x - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
Keras uses the "epsilon hat" form
    x <- x - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
which is ours with eps_keras = eps * sqrt(1 - b2^t).
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


def numpy_adam(x, grads, lr, b1, b2, eps):
    """Our rule in float64 NumPy; each hyperparameter is a number or a list with one value per step.

    Returns ``(x, m, v)``.
    """
    per_step = lambda h: h if isinstance(h, (list, tuple)) else [h] * len(grads)  # noqa: E731
    x = np.array(x, dtype=np.float64)
    m, v = np.zeros_like(x), np.zeros_like(x)
    for t, (g, lr_t, b1_t, b2_t, eps_t) in enumerate(zip(grads, *map(per_step, (lr, b1, b2, eps))), start=1):
        g = np.asarray(g, np.float64)
        m = b1_t * m + (1 - b1_t) * g
        v = b2_t * v + (1 - b2_t) * g**2
        x = x - lr_t * (m / (1 - b1_t**t)) / (np.sqrt(v / (1 - b2_t**t)) + eps_t)
    return x, m, v


def numpy_keras_adam(x, grads, lr, b1, b2, eps):
    """Keras's epsilon-hat rule, as written in keras/src/optimizers/adam.py, in float64 NumPy."""
    x = np.array(x, dtype=np.float64)
    m, v = np.zeros_like(x), np.zeros_like(x)
    for t, g in enumerate(grads, start=1):
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        m = m + (g - m) * (1 - b1)
        v = v + (g**2 - v) * (1 - b2)
        x = x - m * alpha / (np.sqrt(v) + eps)
    return x


# ------------------------------------------------------------------ golden steps
def test_golden_first_two_steps():
    # lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, x0 = [1, 2].
    # step 1, g = [0.5, -1]:
    #   m = 0.1 * g = [0.05, -0.1];  v = 0.001 * g^2 = [0.00025, 0.001]
    #   m_hat = m / 0.1 = [0.5, -1];  sqrt(v_hat) = sqrt(v / 0.001) = [0.5, 1]
    #   step = 0.1 * [0.5 / (0.5 + 1e-8), -1 / (1 + 1e-8)] = [0.1 / (1 + 2e-8), -0.1 / (1 + 1e-8)]
    #        = [0.1 - 2e-9 + 4e-17, -0.1 + 1e-9 - 1e-17]   (lr * sign(g), shrunk by eps/|g|)
    #   x = [0.900000002, 2.099999999]                      (to 5e-17)
    # step 2, g = [1, 1]:
    #   m = 0.9 * m + 0.1 * g = [0.045 + 0.1, -0.09 + 0.1] = [0.145, 0.01]
    #   v = 0.999 * v + 0.001 * g^2 = [0.00024975 + 0.001, 0.000999 + 0.001] = [0.00124975, 0.001999]
    #   1 - b1^2 = 0.19;  1 - b2^2 = 0.001999
    #   m_hat = [0.145 / 0.19, 0.01 / 0.19] = [0.763157894736842, 0.05263157894736842]
    #   v_hat = [0.00124975 / 0.001999, 1] = [0.6251875937968985, 1];  sqrt = [0.7906880508752478, 1]
    #   step = 0.1 * m_hat / (sqrt(v_hat) + 1e-8) = [0.0965181993614913, 0.0052631578421053]
    #   x = [0.8034818006385087, 2.0947368411578946]
    x = tf.Variable([1.0, 2.0], dtype=tf.float64)
    opt = tfopt.Adam(learning_rate=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    opt.apply_gradients([(tf.constant([0.5, -1.0], tf.float64), x)])
    assert_allclose(opt.get_slot(x, "m").numpy(), [0.05, -0.1], rtol=1e-15)
    assert_allclose(opt.get_slot(x, "v").numpy(), [0.00025, 0.001], rtol=1e-15)
    assert_allclose(x.numpy(), [0.900000002, 2.099999999], rtol=1e-15)
    opt.apply_gradients([(tf.constant([1.0, 1.0], tf.float64), x)])
    # step 2 chains a dozen float64 roundings (and 0.1 - 0.09 cancels): 1e-14
    assert_allclose(opt.get_slot(x, "m").numpy(), [0.145, 0.01], rtol=1e-14)
    assert_allclose(opt.get_slot(x, "v").numpy(), [0.00124975, 0.001999], rtol=1e-14)
    assert_allclose(x.numpy(), [0.8034818006385087, 2.0947368411578946], rtol=1e-14)
    assert int(opt.iterations) == 2


def test_first_step_without_epsilon_is_learning_rate_times_sign():
    # eps = 0, step 1: m_hat = g, sqrt(v_hat) = |g|, so x <- x - lr * sign(g) for any g != 0
    # (up to the rounding of (1-b1)*g / (1-b1) and sqrt((1-b2)*g^2 / (1-b2))).
    g = np.array([3e-4, -2.5, 7.0, -1e3])
    x = tf.Variable(np.zeros(4))
    tfopt.Adam(learning_rate=0.25, epsilon=0.0).apply_gradients([(tf.constant(g), x)])
    assert_allclose(x.numpy(), -0.25 * np.sign(g), rtol=1e-15)


# --------------------------------------------------------- NumPy reference (hypothesis)
shapes = st.lists(array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4), min_size=1, max_size=3)
# Zero, or far from the subnormal range: TensorFlow's CPU kernels flush subnormals to zero, NumPy does not.
per_step = lambda low, high: st.lists(st.just(0.0) | st.floats(low, high), min_size=STEPS, max_size=STEPS)  # noqa: E731


@settings(max_examples=25, deadline=None)
@given(
    shapes=shapes,
    lrs=per_step(1e-6, 1.0),
    b1s=per_step(1e-6, 0.99),
    b2s=per_step(1e-6, 0.9999),
    epss=per_step(1e-10, 1.0),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(["float64", "float32"]),
)
def test_matches_numpy_reference(shapes, lrs, b1s, b2s, epss, seed, dtype):
    """Random shapes, several variables, every hyperparameter changed before every step."""
    rng = np.random.default_rng(seed)
    x0 = [rng.normal(size=s).astype(dtype) for s in shapes]
    grads = [[rng.normal(size=s).astype(dtype) for s in shapes] for _ in range(STEPS)]
    variables = [tf.Variable(x) for x in x0]
    opt = tfopt.Adam(learning_rate=lrs[0], beta_1=b1s[0], beta_2=b2s[0], epsilon=epss[0])
    for lr, b1, b2, eps, step_grads in zip(lrs, b1s, b2s, epss, grads):
        opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon = lr, b1, b2, eps
        opt.apply_gradients(zip([tf.constant(g) for g in step_grads], variables))
    tolerance = dict(rtol=1e-12, atol=0) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    for i, (x, variable) in enumerate(zip(x0, variables)):
        want_x, want_m, want_v = numpy_adam(x, [g[i] for g in grads], lrs, b1s, b2s, epss)
        assert variable.dtype == opt.get_slot(variable, "m").dtype == opt.get_slot(variable, "v").dtype == dtype
        assert_allclose(opt.get_slot(variable, "m").numpy(), want_m, **tolerance)
        assert_allclose(opt.get_slot(variable, "v").numpy(), want_v, **tolerance)
        assert_allclose(variable.numpy(), want_x, **tolerance)


# ------------------------------------------------------------------ low precision
@pytest.mark.parametrize("dtype, ulp", [(tf.float16, 2.0**-10), (tf.bfloat16, 2.0**-7)], ids=["float16", "bfloat16"])
def test_low_precision_uses_float32_arithmetic(dtype, ulp):
    """float16/bfloat16: each step computed in float32 from the stored (rounded) slots.

    The hyperparameter-derived scalars (1 - b, 1 - b^t) come from float64 and are cast to
    float32 once. m and v equal the float32 results rounded to the slot dtype bit for bit;
    x (kept in [1, 2), where one unit in the last place is ``ulp``) is within 3 ulps of the
    float32 result rounded once per step.
    """
    rng = np.random.default_rng(4)
    x = tf.cast(rng.uniform(1.25, 1.75, size=500), dtype)
    grads = [tf.cast(rng.normal(size=500), dtype) for _ in range(3)]
    variable = tf.Variable(x)
    opt = tfopt.Adam(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-3)
    f32 = lambda value: tf.cast(tf.constant(value, tf.float64), tf.float32)  # noqa: E731
    b1, b2 = tf.constant(0.9, tf.float64), tf.constant(0.999, tf.float64)
    want_x, want_m, want_v = tf.cast(x, tf.float32), tf.zeros(500), tf.zeros(500)
    for t, g in enumerate(grads, start=1):
        opt.apply_gradients([(g, variable)])
        g32 = tf.cast(g, tf.float32)
        m32 = f32(b1) * want_m + f32(1 - b1) * g32
        v32 = f32(b2) * want_v + f32(1 - b2) * tf.square(g32)
        c1, c2 = f32(1 - b1 ** tf.constant(t, tf.float64)), f32(1 - b2 ** tf.constant(t, tf.float64))
        delta = f32(0.01) * ((m32 / c1) / (tf.sqrt(v32 / c2) + f32(1e-3)))
        want_m, want_v = (tf.cast(tf.cast(s, dtype), tf.float32) for s in (m32, v32))
        want_x = tf.cast(tf.cast(want_x - delta, dtype), tf.float32)
        for name, want in (("m", want_m), ("v", want_v)):
            slot = opt.get_slot(variable, name)
            assert slot.dtype == dtype
            assert_array_equal(tf.cast(slot, tf.float32).numpy(), want.numpy(), err_msg=f"slot {name}, step {t}")
    assert variable.dtype == dtype
    assert_allclose(tf.cast(variable, tf.float32).numpy(), want_x.numpy(), rtol=0, atol=3 * ulp)


# ------------------------------------------------------------------ sparse
# (sparse == dense, slots included, is checked for every optimizer in test_optimizer.py)


# ------------------------------------------------------------------ Keras
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_close_to_keras_adam_when_epsilon_is_tiny(train_in_lockstep, compiled):
    """With eps = 1e-12 the epsilon placement no longer matters (eps / sqrt(v) ~ 1e-8 here).

    What remains is float32 rounding in Keras's bias correction: it computes 1 - b2^t in
    float32, where float32(0.999) = 0.99900001287, so its 1 - b2 is 0.00099998713 (1.3e-5
    relative error) and its first step lr * sqrt(1 - b2) / (1 - b1) is ~6.4e-6 relatively
    short; we form 1 - b^t in float64. Measured: the weights drift apart by ~7e-8 (~lr * 7e-6)
    per step, so the bound is lr * 2e-5 per step taken (plus rtol 1e-5).
    """
    lr = 0.01
    history = train_in_lockstep(
        keras.optimizers.Adam(learning_rate=lr, epsilon=1e-12),
        tfopt.Adam(learning_rate=lr, epsilon=1e-12),
        compiled=compiled,
    )
    for step, (theirs, ours) in enumerate(history, start=1):
        for a, b in zip(theirs, ours):
            assert_allclose(b, a, rtol=1e-5, atol=step * lr * 2e-5, err_msg=f"step {step}")
    assert not np.allclose(history[0][1][0], history[-1][1][0])  # it did train


def test_epsilon_placement_differs_from_keras_as_the_formulas_predict():
    """With a large eps the two rules differ; each equals its own formula, and Keras given
    eps * sqrt(1 - b2^t) at step t equals ours. float64 variables, gradients independent of x.

    lr, b1 and b2 are exact in float32 because Keras keeps its learning rate in a float32
    variable and casts Python betas through float32 (``ops.cast(0.999, "float64")`` is
    0.99900001287), even for float64 variables.
    """
    lr, b1, b2, eps = 2.0**-5, 0.875, 1 - 2.0**-10, 0.1
    rng = np.random.default_rng(5)
    x0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(STEPS)]
    ours = tf.Variable(x0)
    theirs, theirs_shifted = keras.Variable(x0, dtype="float64"), keras.Variable(x0, dtype="float64")
    opt = tfopt.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps)
    keras_opt = keras.optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps)
    keras_shifted = keras.optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps)
    for t, g in enumerate(grads, start=1):
        opt.apply_gradients([(tf.constant(g), ours)])
        keras_opt.apply_gradients([(tf.constant(g), theirs)])
        keras_shifted.epsilon = eps * np.sqrt(1 - b2**t)  # read by Keras on every eager step
        keras_shifted.apply_gradients([(tf.constant(g), theirs_shifted)])
        if t == 1:
            # step 1: ours moves lr * g / (|g| + eps); Keras lr * g / (|g| + eps / sqrt(1 - b2)),
            # i.e. Keras's eps acts 32 times larger (3.2 here) and its first step is much shorter.
            assert_allclose(x0 - ours.numpy(), lr * g / (np.abs(g) + eps), rtol=1e-12)
            assert_allclose(x0 - theirs.numpy(), lr * g / (np.abs(g) + eps / np.sqrt(1 - b2)), rtol=1e-12)
    assert_allclose(ours.numpy(), numpy_adam(x0, grads, lr, b1, b2, eps)[0], rtol=1e-12)
    assert_allclose(theirs.numpy(), numpy_keras_adam(x0, grads, lr, b1, b2, eps), rtol=1e-12)
    assert_allclose(theirs_shifted.numpy(), ours.numpy(), rtol=1e-12)
    step_ours, step_keras = x0 - ours.numpy(), x0 - theirs.numpy()
    # the difference is large, not rounding: Keras's larger effective eps shortens its steps
    assert np.abs(step_keras - step_ours).max() > 0.1 * np.abs(step_ours).max()
    assert np.abs(step_keras).sum() < np.abs(step_ours).sum()
