"""tfopt.Adadelta against Keras 3's Adadelta and a float64 NumPy reference.

Rule (tfopt/optimizers/adadelta.py; Keras's arithmetic), slots E[g^2], E[dx^2] starting at 0, RMS[y] = sqrt(y + eps):
    E[g^2] <- rho*E[g^2] + (1-rho)*g^2;  dx = RMS[E[dx^2]] * g / RMS[E[g^2]]
    E[dx^2] <- rho*E[dx^2] + (1-rho)*dx^2;  x <- x - lr*dx
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_rules import keras_defaults, lockstep, max_relative_difference, numpy_of, tfopt_defaults
from numpy.testing import assert_allclose

import tfopt
from tfopt.optimizers.adadelta import Adadelta

VARIANTS = [{}, {"learning_rate": 1.0, "rho": 0.9}, {"learning_rate": 0.5, "rho": 0.5, "epsilon": 1e-4}]


def test_defaults_are_keras():
    assert tfopt_defaults(Adadelta) == keras_defaults(keras.optimizers.Adadelta) == {
        "learning_rate": 0.001, "rho": 0.95, "epsilon": 1e-7}


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_bit_identical_to_keras_over_100_steps(kwargs):
    """Bitwise, variables and slots: the same ops in the same order (Keras adds ``lr * -dx``, tfopt subtracts
    ``lr * dx``: the same bits), ``1 - rho`` formed in float64 as Keras forms it from the Python float."""
    ours_opt, keras_opt = Adadelta(**kwargs), keras.optimizers.Adadelta(**kwargs)
    ours, theirs = lockstep(ours_opt, keras_opt)
    for i, (x, y) in enumerate(zip(ours, theirs)):
        assert max_relative_difference(x.numpy(), numpy_of(y)) <= 1e-5
        np.testing.assert_array_equal(x.numpy(), numpy_of(y), err_msg=f"variable {i}")
        for name, keras_slots in [("accumulated_grad", keras_opt._accumulated_grads),
                                  ("accumulated_delta_var", keras_opt._accumulated_delta_vars)]:
            np.testing.assert_array_equal(ours_opt.get_slot(x, name).numpy(), numpy_of(keras_slots[i]),
                                          err_msg=f"slot {name} of variable {i}")


def numpy_adadelta(x, grads, *, learning_rate=0.001, rho=0.95, epsilon=1e-7):
    x = np.array(x, np.float64)
    eg, edx = np.zeros_like(x), np.zeros_like(x)
    for g in grads:
        eg = rho * eg + (1 - rho) * g**2
        dx = np.sqrt(edx + epsilon) / np.sqrt(eg + epsilon) * g
        edx = rho * edx + (1 - rho) * dx**2
        x = x - learning_rate * dx
    return x, eg, edx


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_float64_matches_numpy_reference(kwargs):
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(6)]
    x = tf.Variable(x0)
    opt = Adadelta(**kwargs)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), x)])
    want_x, eg, edx = numpy_adadelta(x0, grads, **kwargs)
    assert_allclose(x.numpy(), want_x, rtol=1e-12)
    assert_allclose(opt.get_slot(x, "accumulated_grad").numpy(), eg, rtol=1e-12)
    assert_allclose(opt.get_slot(x, "accumulated_delta_var").numpy(), edx, rtol=1e-12)


def test_conformance_kit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        tfopt.testing.check_optimizer(Adadelta, skip=("mirrored", "xla", "keras"))


@pytest.mark.parametrize("kwargs, name", [
    ({"rho": 1.0}, "rho"), ({"rho": -0.01}, "rho"), ({"epsilon": -1e-7}, "epsilon"),
    ({"epsilon": float("nan")}, "epsilon"), ({"learning_rate": -1.0}, "learning"),
])
def test_bad_hyperparameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Adadelta(**kwargs)
