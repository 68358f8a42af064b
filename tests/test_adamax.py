"""tfopt.Adamax against Keras 3's Adamax and a float64 NumPy reference.

Rule (tfopt/optimizers/adamax.py; Keras's arithmetic and epsilon placement), slots m, u starting at 0:
    m <- m + (g - m)*(1 - b1);  u <- max(b2*u, |g|);  x <- x - lr*m / ((1 - b1^t) * (u + eps))
The one deliberate difference from Keras: 1 - b1^t is formed in float64 (as tfopt.Adam's corrections),
Keras raises float32 b1 to the float32 step in float32.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_rules import keras_defaults, lockstep, max_relative_difference, numpy_of, tfopt_defaults
from numpy.testing import assert_allclose

import tfopt
from tfopt.optimizers.adamax import Adamax

VARIANTS = [{}, {"learning_rate": 0.01, "beta_1": 0.8}, {"learning_rate": 0.1, "beta_1": 0.5, "beta_2": 0.9,
                                                         "epsilon": 1e-3}]


class KerasRoundedAdamax(Adamax):
    """Adamax with the bias correction rounded Keras's way: ``1 - float32(b1) ** float32(t)`` in float32."""

    def step_values(self, *, step, beta_1, **hyper):
        values = super().step_values(step=step, beta_1=beta_1, **hyper)
        power = tf.pow(tf.cast(beta_1, tf.float32), tf.cast(step, tf.float32))
        values["correction_1"] = tf.cast(1 - power, tf.float64)  # exact: rounded back to the same float32
        return values


def test_defaults_are_keras():
    assert tfopt_defaults(Adamax) == keras_defaults(keras.optimizers.Adamax) == {
        "learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}


def _slot_pairs(ours_opt, keras_opt, x, i):
    return [("m", ours_opt.get_slot(x, "m"), keras_opt._m[i]), ("u", ours_opt.get_slot(x, "u"), keras_opt._u[i])]


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_matches_keras_over_100_steps(kwargs):
    """Within 1e-5 relative (seen: up to about 2e-7); the slots bit for bit. The variables are not always
    bit-identical: the float64 bias correction rounds (once) differently from Keras's float32 power
    (with the defaults, the difference happens to stay below the variables' last bit over these 100 steps)."""
    ours_opt, keras_opt = Adamax(**kwargs), keras.optimizers.Adamax(**kwargs)
    ours, theirs = lockstep(ours_opt, keras_opt)
    for i, (x, y) in enumerate(zip(ours, theirs)):
        assert max_relative_difference(x.numpy(), numpy_of(y)) <= 1e-5, f"variable {i}"
        for name, ours_slot, keras_slot in _slot_pairs(ours_opt, keras_opt, x, i):
            np.testing.assert_array_equal(ours_slot.numpy(), numpy_of(keras_slot), err_msg=f"slot {name} of {i}")


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_keras_rounded_correction_is_bit_identical_to_keras(kwargs):
    """The mapping: with the correction rounded Keras's way, the same update gives Keras's bits exactly."""
    ours_opt, keras_opt = KerasRoundedAdamax(**kwargs), keras.optimizers.Adamax(**kwargs)
    ours, theirs = lockstep(ours_opt, keras_opt)
    for i, (x, y) in enumerate(zip(ours, theirs)):
        np.testing.assert_array_equal(x.numpy(), numpy_of(y), err_msg=f"variable {i}")


def numpy_adamax(x, grads, *, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    x = np.array(x, np.float64)
    m, u = np.zeros_like(x), np.zeros_like(x)
    for t, g in enumerate(grads, 1):
        m = beta_1 * m + (1 - beta_1) * g
        u = np.maximum(beta_2 * u, np.abs(g))
        x = x - learning_rate / (1 - beta_1**t) * m / (u + epsilon)
    return x, m, u


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_float64_matches_numpy_reference(kwargs):
    """The paper's ``b1*m + (1-b1)*g`` and ``lr/(1-b1^t) * m/(u+eps)`` (Keras's forms, reordered)."""
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(6)]
    x = tf.Variable(x0)
    opt = Adamax(**kwargs)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), x)])
    want_x, m, u = numpy_adamax(x0, grads, **kwargs)
    assert_allclose(x.numpy(), want_x, rtol=1e-12)
    assert_allclose(opt.get_slot(x, "m").numpy(), m, rtol=1e-12)
    assert_allclose(opt.get_slot(x, "u").numpy(), u, rtol=1e-12)


def test_conformance_kit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        tfopt.testing.check_optimizer(Adamax, skip=("mirrored", "xla", "keras"))


@pytest.mark.parametrize("kwargs, name", [
    ({"beta_1": 1.0}, "beta_1"), ({"beta_1": -0.1}, "beta_1"), ({"beta_2": 1.5}, "beta_2"),
    ({"epsilon": -1e-7}, "epsilon"), ({"learning_rate": float("nan")}, "learning"),
])
def test_bad_hyperparameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Adamax(**kwargs)
