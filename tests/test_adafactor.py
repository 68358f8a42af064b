"""tfopt.Adafactor against Keras 3's Adafactor and a float64 NumPy reference.

Rule (tfopt/optimizers/adafactor.py; Keras's arithmetic): G = g^2 + eps_1, rho = min(lr, 1/sqrt(t)),
alpha = max(eps_2, RMS(x)) * rho, beta = 1 - t^beta_2_decay; rank >= 2: R, C row/column means of G
(moving averages), V = (R / mean(R))[..., None] * C[..., None, :]; rank < 2: V moving average of G;
U = g / sqrt(V), x <- x - alpha * U / max(1, RMS(U) / clip_threshold).
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_rules import keras_defaults, lockstep, numpy_of, tfopt_defaults
from numpy.testing import assert_allclose

import tfopt
from tfopt.optimizers.adafactor import Adafactor

SHAPES = [(7,), (4, 5), (3, 4, 5)]
VARIANTS = [
    {},
    {"learning_rate": 0.01, "beta_2_decay": -0.5, "epsilon_1": 1e-20, "epsilon_2": 1e-2, "clip_threshold": 0.5,
     "relative_step": False},
    {"learning_rate": 0.5, "clip_threshold": 2.0},
]


def test_defaults_are_keras():
    assert tfopt_defaults(Adafactor) == keras_defaults(keras.optimizers.Adafactor) == {
        "learning_rate": 0.001, "beta_2_decay": -0.8, "epsilon_1": 1e-30, "epsilon_2": 1e-3,
        "clip_threshold": 1.0, "relative_step": True}


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_bit_identical_to_keras_over_100_steps(kwargs):
    """Bitwise, variables and slots: Keras's float32 ops in Keras's order (1/sqrt(t) and t^beta_2_decay in
    float32 as Keras forms them). Keras's full-size velocity of a factored variable is tfopt's V, recomputed."""
    ours_opt, keras_opt = Adafactor(**kwargs), keras.optimizers.Adafactor(**kwargs)
    ours, theirs = lockstep(ours_opt, keras_opt, shapes=SHAPES)
    for i, (x, y) in enumerate(zip(ours, theirs)):
        np.testing.assert_array_equal(x.numpy(), numpy_of(y), err_msg=f"variable {i}")
        if len(x.shape) >= 2:
            r, c = ours_opt.get_slot(x, "r"), ours_opt.get_slot(x, "c")
            np.testing.assert_array_equal(r.numpy(), numpy_of(keras_opt._r[i]), err_msg=f"r of variable {i}")
            np.testing.assert_array_equal(c.numpy(), numpy_of(keras_opt._c[i]), err_msg=f"c of variable {i}")
            v = tf.expand_dims(r / tf.reduce_mean(r, axis=-1, keepdims=True), -1) * tf.expand_dims(c, -2)
        else:
            v = ours_opt.get_slot(x, "v")
        np.testing.assert_array_equal(v.numpy(), numpy_of(keras_opt._v[i]), err_msg=f"v of variable {i}")


def test_slot_shapes():
    opt = Adafactor()
    variables = [tf.Variable(tf.zeros(s)) for s in [(), (7,), (4, 5), (3, 4, 5)]]
    opt.build(variables)
    shapes = [tuple(tuple(opt.get_slot(v, n).shape) for n in ("r", "c", "v")) for v in variables]
    assert shapes == [((), (), ()), ((), (), (7,)), ((4,), (5,), ()), ((3, 4), (3, 5), ())]
    assert all(opt.get_slot(v, n).dtype == v.dtype for v in variables for n in ("r", "c", "v"))


def test_as_keras_slot_shapes_and_numbers():
    """The Keras wrapper creates the same slot shapes (add_variable) and steps the same numbers."""
    rng = np.random.default_rng(3)
    init = [rng.normal(size=s).astype("float32") for s in SHAPES]
    ours, theirs = [tf.Variable(x) for x in init], [keras.Variable(x) for x in init]
    opt, wrapped = Adafactor(0.01), Adafactor(0.01).as_keras()
    for _ in range(5):
        grads = [tf.constant(rng.normal(size=s).astype("float32")) for s in SHAPES]
        opt.apply_gradients(zip(grads, ours))
        wrapped.apply_gradients(zip(grads, theirs))
    for i, (x, y) in enumerate(zip(ours, theirs)):
        np.testing.assert_array_equal(x.numpy(), numpy_of(y))
        for name in ("r", "c", "v"):
            assert tuple(wrapped._slot_lists[name][i].shape) == tuple(opt.get_slot(x, name).shape), (i, name)


def numpy_adafactor(x, grads, *, learning_rate=0.001, beta_2_decay=-0.8, epsilon_1=1e-30, epsilon_2=1e-3,
                    clip_threshold=1.0, relative_step=True):
    x = np.array(x, np.float64)
    rms = lambda a: np.sqrt(np.mean(a**2))  # noqa: E731
    r, c, v = np.zeros(x.shape[:-1]), np.zeros(x.shape[:-2] + x.shape[-1:]), np.zeros_like(x)
    for t, g in enumerate(grads, 1):
        rho = min(learning_rate, 1 / np.sqrt(t))
        alpha = max(epsilon_2, rms(x)) * rho
        big_g = g**2 + epsilon_1
        beta = 1 - t**beta_2_decay
        if x.ndim >= 2:
            r = beta * r + (1 - beta) * big_g.mean(axis=-1)
            c = beta * c + (1 - beta) * big_g.mean(axis=-2)
            v = (r / r.mean(axis=-1, keepdims=True))[..., None] * c[..., None, :]
        else:
            v = beta * v + (1 - beta) * big_g
        u = g / np.sqrt(v)
        x = x - alpha * u / max(1.0, rms(u) / clip_threshold)
    return x, r, c, v


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_float64_matches_numpy_reference(kwargs, shape):
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=shape)
    grads = [rng.normal(size=shape) for _ in range(6)]
    x = tf.Variable(x0)
    opt = Adafactor(**kwargs)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), x)])
    want_x, r, c, v = numpy_adafactor(x0, grads, **kwargs)
    assert_allclose(x.numpy(), want_x, rtol=1e-12)
    if len(shape) >= 2:
        assert_allclose(opt.get_slot(x, "r").numpy(), r, rtol=1e-12)
        assert_allclose(opt.get_slot(x, "c").numpy(), c, rtol=1e-12)
    else:
        assert_allclose(opt.get_slot(x, "v").numpy(), v, rtol=1e-12)


def test_full_conformance_kit():
    """All properties: as_keras (its build's add_variable for the factored shapes), MirroredStrategy, XLA."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        report = tfopt.testing.check_optimizer(Adafactor)
    assert {"keras", "mirrored", "xla"} <= set(report.checked), report


def test_conformance_kit_other_arguments():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        tfopt.testing.check_optimizer(lambda: Adafactor(**VARIANTS[1]), skip=("mirrored", "xla", "keras"))


def test_convergence_test_harness():
    """The harness builds its slots through the optimizer (slot_shape honoured) and resets them with zeros_like."""
    result = tfopt.convergence_test(Adafactor(0.1), tfopt.problems.himmelblau, init=[1.0, 1.0], max_iters=50)
    again = tfopt.convergence_test(Adafactor(0.1), tfopt.problems.himmelblau, init=[1.0, 1.0], max_iters=50)
    assert np.isfinite(np.asarray(result.x_final)).all()
    np.testing.assert_array_equal(np.asarray(result.x_final), np.asarray(again.x_final))


@pytest.mark.parametrize("kwargs, name", [
    ({"beta_2_decay": 0.5}, "beta_2_decay"), ({"epsilon_1": -1.0}, "epsilon_1"), ({"epsilon_2": -1.0}, "epsilon_2"),
    ({"clip_threshold": 0.0}, "clip_threshold"), ({"clip_threshold": float("nan")}, "clip_threshold"),
    ({"relative_step": "yes"}, "relative_step"), ({"learning_rate": -0.1}, "learning"),
])
def test_bad_hyperparameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Adafactor(**kwargs)
