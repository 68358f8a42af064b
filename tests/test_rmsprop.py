"""tfopt.RMSprop (plain, momentum, centered) against Keras 3's RMSprop and a float64 NumPy reference.

Rule (tfopt/optimizers/rmsprop.py; Keras's arithmetic), slots v, p, a starting at 0:
    v <- rho*v + (1-rho)*g^2;  a <- rho*a + (1-rho)*g               (a: centered only)
    s = lr*g / sqrt(v + eps)   or   lr*g / sqrt(v - a^2 + eps)       (centered)
    p <- momentum*p + s;  x <- x - p
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_rules import keras_defaults, lockstep, max_relative_difference, numpy_of, tfopt_defaults
from numpy.testing import assert_allclose

import tfopt
from tfopt.optimizers.rmsprop import RMSprop

VARIANTS = [
    {},
    {"momentum": 0.9},
    {"centered": True},
    {"learning_rate": 0.01, "rho": 0.8, "momentum": 0.5, "centered": True, "epsilon": 1e-3},
]


def test_defaults_are_keras():
    assert tfopt_defaults(RMSprop) == keras_defaults(keras.optimizers.RMSprop) == {
        "learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False}


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_bit_identical_to_keras_over_100_steps(kwargs):
    """Bitwise, variables and slots: the same ops in the same order, and ``1 - rho`` formed in float64
    as Keras forms it from the Python float (1 - float32(rho) would differ). With momentum 0 tfopt's
    ``p = 0*p + s`` is ``s`` exactly, which Keras subtracts directly."""
    ours_opt, keras_opt = RMSprop(**kwargs), keras.optimizers.RMSprop(**kwargs)
    ours, theirs = lockstep(ours_opt, keras_opt)
    for i, (x, y) in enumerate(zip(ours, theirs)):
        assert max_relative_difference(x.numpy(), numpy_of(y)) <= 1e-5
        np.testing.assert_array_equal(x.numpy(), numpy_of(y), err_msg=f"variable {i}")
        slots = {"velocity": keras_opt._velocities}
        if keras_opt.momentum > 0:
            slots["momentum"] = keras_opt._momentums
        if keras_opt.centered:
            slots["average_gradient"] = keras_opt._average_gradients
        for name, keras_slots in slots.items():
            np.testing.assert_array_equal(ours_opt.get_slot(x, name).numpy(), numpy_of(keras_slots[i]),
                                          err_msg=f"slot {name} of variable {i}")


def numpy_rmsprop(x, grads, *, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
    x = np.array(x, np.float64)
    v, p, a = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    for g in grads:
        v = rho * v + (1 - rho) * g**2
        a = rho * a + (1 - rho) * g
        s = learning_rate * g / np.sqrt((v - a**2 if centered else v) + epsilon)
        p = momentum * p + s
        x = x - p
    return x, v, p, a


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_float64_matches_numpy_reference(kwargs):
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(6)]
    x = tf.Variable(x0)
    opt = RMSprop(**kwargs)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), x)])
    want_x, v, p, a = numpy_rmsprop(x0, grads, **kwargs)
    assert_allclose(x.numpy(), want_x, rtol=1e-12)
    assert_allclose(opt.get_slot(x, "velocity").numpy(), v, rtol=1e-12)
    assert_allclose(opt.get_slot(x, "momentum").numpy(), p, rtol=1e-12)
    if kwargs.get("centered"):
        assert_allclose(opt.get_slot(x, "average_gradient").numpy(), a, rtol=1e-12)


def test_slots_follow_centered():
    assert RMSprop().slot_names == ("velocity", "momentum")
    assert RMSprop(centered=True).slot_names == ("velocity", "momentum", "average_gradient")


@pytest.mark.parametrize("factory", [RMSprop, lambda: RMSprop(momentum=0.9, centered=True)],
                         ids=["default", "momentum-centered"])
def test_conformance_kit(factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        tfopt.testing.check_optimizer(factory, skip=("mirrored", "xla", "keras"))


@pytest.mark.parametrize("kwargs, name", [
    ({"rho": 1.0}, "rho"), ({"rho": -0.1}, "rho"), ({"momentum": 1.0}, "momentum"), ({"momentum": -0.5}, "momentum"),
    ({"epsilon": -1e-7}, "epsilon"), ({"epsilon": float("nan")}, "epsilon"), ({"learning_rate": -1.0}, "learning"),
    ({"centered": "yes"}, "centered"),
])
def test_bad_hyperparameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RMSprop(**kwargs)
