"""tfopt.Yogi against TensorFlow Addons' reference (yogi_test.py) and a float64 NumPy reference.

Rule (tfopt/optimizers/yogi.py; TFA's Yogi), m starting at 0, v at v0 = initial_accumulator_value, t the 1-based step:
    m <- b1*m + (1-b1)*g;  v <- v + (1-b2) * sign(g^2 - v) * g^2   (or tanh(10 (g^2 - v)))
    a = lr * sqrt(1-b2^t)/(1-b1^t) / (sqrt(v) + eps);  y = x - a*m
    x <- sign(y) * max(|y| - l1*a, 0) / (1 + l2*a)
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from numpy.testing import assert_allclose

import tfopt
from tfopt.optimizers.yogi import Yogi


def tfa_yogi_update_numpy(param, g_t, t, m, v, alpha=0.01, beta1=0.9, beta2=0.999, epsilon=1e-3, l1reg=0.0,
                          l2reg=0.0):
    """TFA's yogi_update_numpy (tensorflow_addons/optimizers/tests/yogi_test.py), as there, in float64."""
    alpha_t = alpha * np.sqrt(1 - beta2**t) / (1 - beta1**t)
    m_t = beta1 * m + (1 - beta1) * g_t
    g2_t = g_t * g_t
    v_t = v - (1 - beta2) * np.sign(v - g2_t) * g2_t
    per_coord_lr = alpha_t / (np.sqrt(v_t) + epsilon)
    param_t = param - per_coord_lr * m_t
    if l1reg > 0:
        param_t = (param_t - l1reg * per_coord_lr * np.sign(param_t)) / (1 + l2reg * per_coord_lr)
        param_t[np.abs(param_t) < l1reg * per_coord_lr] = 0.0
    elif l2reg > 0:
        param_t = param_t / (1 + l2reg * per_coord_lr)
    return param_t, m_t, v_t


# TFA's assert_allclose_according_to_type: rtol = atol = 1e-6 for float32/float64, 1e-3 for float16.
TFA_TOLERANCE = {tf.float16: 1e-3, tf.float32: 1e-6, tf.float64: 1e-6}


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("beta1, l1, l2", [(0.0, 0.0, 0.0), (0.0, 0.1, 0.2), (0.9, 0.0, 0.0), (0.9, 0.1, 0.2)],
                         ids=["basic", "regularization", "momentum", "momentum_regularization"])
@pytest.mark.parametrize("dtype", [tf.float16, tf.float32, tf.float64], ids=lambda d: d.name)
def test_tfa_basic_and_sparse(dtype, beta1, l1, l2, sparse):
    """TFA's do_test_basic / do_test_sparse: 3 steps, initial_accumulator_value=1, TFA's tolerances."""
    var0_np, var1_np = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    grads0_np, grads1_np = np.array([0.1, 0.1]), np.array([0.01, 0.01])
    m0 = m1 = 0.0
    v0 = v1 = 1.0
    var0, var1 = tf.Variable(var0_np, dtype=dtype), tf.Variable(var1_np, dtype=dtype)
    grads = [tf.constant(grads0_np, dtype), tf.constant(grads1_np, dtype)]
    if sparse:
        grads = [tf.IndexedSlices(g, tf.constant([0, 1]), tf.constant([2])) for g in grads]
    opt = Yogi(beta1=beta1, l1_regularization_strength=l1, l2_regularization_strength=l2,
               initial_accumulator_value=1.0)
    tol = TFA_TOLERANCE[dtype]
    for t in range(1, 4):
        opt.apply_gradients(zip(grads, [var0, var1]))
        var0_np, m0, v0 = tfa_yogi_update_numpy(var0_np, grads0_np, t, m0, v0, beta1=beta1, l1reg=l1, l2reg=l2)
        var1_np, m1, v1 = tfa_yogi_update_numpy(var1_np, grads1_np, t, m1, v1, beta1=beta1, l1reg=l1, l2reg=l2)
        assert_allclose(var0.numpy(), var0_np, rtol=tol, atol=tol)
        assert_allclose(var1.numpy(), var1_np, rtol=tol, atol=tol)
    if dtype == tf.float64:  # TFA's numbers exactly, in float64 (up to the last bits)
        assert_allclose(var0.numpy(), var0_np, rtol=1e-14)
        assert_allclose(opt.get_slot(var0, "v_change").numpy() + 1.0, v0, rtol=1e-14)
        assert_allclose(opt.get_slot(var0, "m").numpy(), m0, rtol=1e-14, atol=1e-300)


def test_tfa_sparse_repeated_indices():
    """TFA's test_sparse_repeated_indices: [0.1, 0.1] at row 1 twice equals 0.2 at row 1 once."""
    repeated, aggregated = tf.Variable([[1.0], [2.0]]), tf.Variable([[1.0], [2.0]])
    opt1, opt2 = Yogi(), Yogi()
    for _ in range(3):
        opt1.apply_gradients([(tf.IndexedSlices(tf.constant([[0.1], [0.1]]), tf.constant([1, 1]),
                                                tf.constant([2, 1])), repeated)])
        opt2.apply_gradients([(tf.IndexedSlices(tf.constant([[0.2]]), tf.constant([1]), tf.constant([2, 1])),
                               aggregated)])
    assert_allclose(repeated.numpy(), aggregated.numpy())


def test_defaults_are_tfa():
    opt = Yogi()
    got = {name: float(getattr(opt, name)) for name in (
        "learning_rate", "beta1", "beta2", "epsilon", "l1_regularization_strength", "l2_regularization_strength",
        "initial_accumulator_value")}
    assert got == {"learning_rate": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-3,
                   "l1_regularization_strength": 0.0, "l2_regularization_strength": 0.0,
                   "initial_accumulator_value": 1e-6}
    assert opt.activation == "sign" and opt.slot_names == ("m", "v_change")


def numpy_yogi(x, grads, *, learning_rate=0.01, beta1=0.9, beta2=0.999, epsilon=1e-3, l1_regularization_strength=0.0,
               l2_regularization_strength=0.0, initial_accumulator_value=1e-6, activation="sign"):
    """The module's formulas in float64 (v kept as TFA's accumulator)."""
    x = np.array(x, np.float64)
    m, v = np.zeros_like(x), np.full_like(x, initial_accumulator_value)
    for t, g in enumerate(grads, 1):
        m = beta1 * m + (1 - beta1) * g
        s = np.sign(g**2 - v) if activation == "sign" else np.tanh(10 * (g**2 - v))
        v = v + (1 - beta2) * s * g**2
        a = learning_rate * np.sqrt(1 - beta2**t) / (1 - beta1**t) / (np.sqrt(v) + epsilon)
        y = x - a * m
        x = np.sign(y) * np.maximum(np.abs(y) - l1_regularization_strength * a, 0) / (
            1 + l2_regularization_strength * a)
    return x, m, v


VARIANTS = [
    {},
    {"activation": "tanh", "initial_accumulator_value": 0.5},
    {"beta1": 0.0, "l2_regularization_strength": 0.3},
    {"learning_rate": 0.5, "l1_regularization_strength": 0.05, "l2_regularization_strength": 0.1},
    {"initial_accumulator_value": 0.0, "epsilon": 1e-6, "beta2": 0.9},
]


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_float64_matches_numpy_reference(kwargs):
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(8)]
    x = tf.Variable(x0)
    opt = Yogi(**kwargs)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), x)])
    want_x, m, v = numpy_yogi(x0, grads, **kwargs)
    if kwargs.get("l1_regularization_strength"):
        assert (want_x == 0).any()  # the L1 step set some coordinates to 0 exactly
    assert_allclose(x.numpy(), want_x, rtol=1e-12, atol=1e-300)
    assert_allclose(opt.get_slot(x, "m").numpy(), m, rtol=1e-12)
    assert_allclose(opt.get_slot(x, "v_change").numpy() + opt.initial_accumulator_value.numpy(), v, rtol=1e-12)


@pytest.mark.parametrize("factory", [Yogi, lambda: Yogi(activation="tanh", l1_regularization_strength=0.01,
                                                        l2_regularization_strength=0.01)],
                         ids=["default", "tanh-l1-l2"])
def test_conformance_kit(factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        tfopt.testing.check_optimizer(factory, skip=("mirrored", "xla", "keras"))


@pytest.mark.parametrize("kwargs, name", [
    ({"beta1": 1.0}, "beta1"), ({"beta2": -0.1}, "beta2"), ({"epsilon": -1e-3}, "epsilon"),
    ({"learning_rate": -1.0}, "learning"), ({"l1_regularization_strength": -0.1}, "l1_regularization_strength"),
    ({"l2_regularization_strength": float("nan")}, "l2_regularization_strength"),
    ({"initial_accumulator_value": -1e-6}, "initial_accumulator_value"), ({"activation": "relu"}, "activation"),
])
def test_bad_hyperparameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Yogi(**kwargs)
