"""tfopt's Nadam, AdamW, Lion and Lamb against Keras 3's optimizers of the same names and against
float64 NumPy references of the formulas in their docstrings.

Parity (100 float32 steps, two variables, random gradients, the same arguments):
* Lion: bit for bit (the same operations in the same order), with weight decay too (the base
  optimizer's ``weight_decay``, applied as Keras applies it; Nadam's and Lamb's too).
* Nadam, Lamb: not bit for bit (Keras updates the moments as ``m + (g - m) * (1 - b1)``, forms
  ``b^t`` in float32 and, for Nadam, accumulates the momentum product in a float32 variable;
  tfopt uses ``b1*m + (1-b1)*g`` and float64 step values), within 1e-6 relative. Both place
  epsilon as the papers do (outside the bias-corrected root), so the comparison is at any eps.
* AdamW: tfopt's epsilon is the paper's (as tfopt.Adam's); Keras's is "epsilon hat", which is
  ours with ``eps_hat = eps * sqrt(1 - b2^t)``: compared at eps = 0, and at eps = 1e-2 with
  Keras's epsilon set to that mapping before each step. Not bit for bit (Keras folds the bias
  corrections into one step size ``lr * sqrt(1 - b2^t) / (1 - b1^t)``), within 1e-5 relative.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from numpy.testing import assert_allclose, assert_array_equal

import tfopt
from tfopt.optimizers.adamw import AdamW
from tfopt.optimizers.lamb import Lamb
from tfopt.optimizers.lion import Lion
from tfopt.optimizers.nadam import Nadam, momentum_product

SHAPES = [(5, 3), (7,)]
STEPS = 100


def run_both(ours, theirs, steps=STEPS, seed=0, before_step=None):
    """Apply the same random float32 gradients with both optimizers; return both variables' values."""
    rng = np.random.default_rng(seed)
    x0 = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    mine, keras_vars = [tf.Variable(x) for x in x0], [tf.Variable(x) for x in x0]
    for t in range(1, steps + 1):
        grads = [tf.constant(rng.normal(size=s).astype(np.float32)) for s in SHAPES]
        if before_step:
            before_step(t)
        ours.apply_gradients(zip(grads, mine))
        theirs.apply_gradients(zip(grads, keras_vars))
    return [v.numpy() for v in mine], [v.numpy() for v in keras_vars]


# ------------------------------------------------------------------------------- Keras parity
@pytest.mark.parametrize("kwargs", [{}, dict(learning_rate=0.01, beta_1=0.8, beta_2=0.9),
                                    dict(weight_decay=0.05)],
                         ids=["defaults", "other", "weight_decay"])
def test_lion_is_keras_lion_bit_for_bit(kwargs):
    mine, theirs = run_both(Lion(**kwargs), keras.optimizers.Lion(**kwargs))
    for a, b in zip(mine, theirs):
        assert_array_equal(a, b)


@pytest.mark.parametrize("name, ours, theirs, kwargs", [
    ("Nadam", Nadam, keras.optimizers.Nadam, {}),
    ("Nadam", Nadam, keras.optimizers.Nadam, dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=0.1)),
    ("Nadam", Nadam, keras.optimizers.Nadam, dict(weight_decay=0.05)),
    ("Lamb", Lamb, keras.optimizers.Lamb, {}),
    ("Lamb", Lamb, keras.optimizers.Lamb, dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=0.1)),
    ("Lamb", Lamb, keras.optimizers.Lamb, dict(weight_decay=0.05)),
    ("AdamW", AdamW, keras.optimizers.AdamW, dict(epsilon=0.0)),
    ("AdamW", AdamW, keras.optimizers.AdamW, dict(learning_rate=0.01, weight_decay=0.1, beta_1=0.8, beta_2=0.99,
                                                  epsilon=0.0)),
])
def test_matches_keras_within_float32_rounding(name, ours, theirs, kwargs):
    mine, keras_values = run_both(ours(**kwargs), theirs(**kwargs))
    for a, b in zip(mine, keras_values):
        assert not np.array_equal(a, b)  # rounded differently (module docstring); a change here is news
        assert_allclose(a, b, rtol=1e-5, atol=0)


def test_adamw_epsilon_is_keras_epsilon_hat_times_root_of_bias_correction():
    eps, b2 = 1e-2, 0.999
    theirs = keras.optimizers.AdamW(epsilon=eps)

    def map_epsilon(t):
        theirs.epsilon = eps * np.sqrt(1 - b2**t)

    mine, keras_values = run_both(AdamW(epsilon=eps), theirs, before_step=map_epsilon)
    for a, b in zip(mine, keras_values):
        assert_allclose(a, b, rtol=1e-5, atol=0)
    # and without the mapping, the same eps is a different rule (about 3% apart here)
    mine, keras_values = run_both(AdamW(epsilon=eps), keras.optimizers.AdamW(epsilon=eps))
    assert max(np.max(np.abs(a - b) / np.abs(b)) for a, b in zip(mine, keras_values)) > 1e-3


@pytest.mark.parametrize("ours, theirs", [(Nadam, keras.optimizers.Nadam), (AdamW, keras.optimizers.AdamW),
                                          (Lion, keras.optimizers.Lion), (Lamb, keras.optimizers.Lamb)])
def test_keras_argument_names_and_defaults(ours, theirs):
    import inspect

    keras_defaults = {k: p.default for k, p in inspect.signature(theirs).parameters.items()}
    mine = {k: p.default for k, p in inspect.signature(ours).parameters.items() if k != "fused"}
    for name, default in mine.items():
        assert keras_defaults[name] == default, name
    positional = [k for k, p in inspect.signature(ours).parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == list(keras_defaults)[:len(positional)]  # Keras's positional order
    assert ours().get_config().get("weight_decay") == keras_defaults["weight_decay"]


# ------------------------------------------------------------------------- float64 references
def numpy_nadam(x, grads, lr, b1, b2, eps):
    x, m, v, product = np.array(x, np.float64), 0.0, 0.0, 1.0
    for t, g in enumerate(grads, start=1):
        u_t, u_next = b1 * (1 - 0.5 * 0.96**t), b1 * (1 - 0.5 * 0.96 ** (t + 1))
        product *= u_t
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = u_next * m / (1 - product * u_next) + (1 - u_t) * g / (1 - product)
        x = x - lr * m_hat / (np.sqrt(v / (1 - b2**t)) + eps)
    return x


def numpy_adamw(x, grads, lr, wd, b1, b2, eps):
    x, m, v = np.array(x, np.float64), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        x = x - lr * ((m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps) + wd * x)
    return x


def numpy_lion(x, grads, lr, b1, b2, wd):
    x, m = np.array(x, np.float64), 0.0
    for g in grads:
        x = x - lr * (np.sign(b1 * m + (1 - b1) * g) + wd * x)
        m = b2 * m + (1 - b2) * g
    return x


def numpy_lamb(x, grads, lr, b1, b2, eps):
    x, m, v = np.array(x, np.float64), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        r = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        x_norm, r_norm = np.linalg.norm(x), np.linalg.norm(r)
        x = x - lr * (x_norm / r_norm if x_norm > 0 and r_norm > 0 else 1.0) * r
    return x


@pytest.mark.parametrize("cls, kwargs, reference, args", [
    (Nadam, dict(learning_rate=0.1, beta_1=0.8, beta_2=0.9, epsilon=0.1), numpy_nadam, (0.1, 0.8, 0.9, 0.1)),
    (AdamW, dict(learning_rate=0.1, weight_decay=0.3, beta_1=0.8, beta_2=0.9, epsilon=0.1), numpy_adamw,
     (0.1, 0.3, 0.8, 0.9, 0.1)),
    (Lion, dict(learning_rate=0.1, beta_1=0.8, beta_2=0.9, weight_decay=0.3), numpy_lion, (0.1, 0.8, 0.9, 0.3)),
    (Lion, dict(learning_rate=0.1, beta_1=0.8, beta_2=0.9), numpy_lion, (0.1, 0.8, 0.9, 0.0)),
    (Lamb, dict(learning_rate=0.1, beta_1=0.8, beta_2=0.9, epsilon=0.1), numpy_lamb, (0.1, 0.8, 0.9, 0.1)),
], ids=["Nadam", "AdamW", "Lion-weight_decay", "Lion", "Lamb"])
def test_matches_float64_reference(cls, kwargs, reference, args):
    rng = np.random.default_rng(1)
    x0 = [rng.normal(size=s) for s in SHAPES]
    grads = [[rng.normal(size=s) for s in SHAPES] for _ in range(6)]
    variables = [tf.Variable(x) for x in x0]
    opt = cls(**kwargs)
    for step_grads in grads:
        opt.apply_gradients(zip([tf.constant(g) for g in step_grads], variables))
    for i, (x, variable) in enumerate(zip(x0, variables)):
        assert variable.dtype == tf.float64
        assert_allclose(variable.numpy(), reference(x, [g[i] for g in grads], *args), rtol=1e-12, atol=0)


def test_lamb_trust_ratio_is_one_for_a_zero_variable():
    # ||x|| = 0: ratio 1, so the first step is Adam's (with eps = 0: lr * sign(g))
    x = tf.Variable(np.zeros(3))
    Lamb(learning_rate=0.5, epsilon=0.0).apply_gradients([(tf.constant([2.0, -3.0, 0.5], tf.float64), x)])
    assert_allclose(x.numpy(), [-0.5, 0.5, -0.5], rtol=1e-15)


def test_nadam_momentum_product_is_the_running_product():
    running = 1.0
    for t in range(1, 1501):
        running *= 0.9 * (1 - 0.5 * 0.96**t)
        if t in (1, 2, 10, 100, 1023, 1024, 1025, 1500):
            got = momentum_product(tf.constant(float(t), tf.float64), tf.constant(0.9, tf.float64)).numpy()
            assert_allclose(got, running, rtol=1e-13)


# ----------------------------------------------------------------------- conformance kit
@pytest.mark.parametrize("cls", [Nadam, Lion, Lamb])
def test_conformance_kit(cls):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        tfopt.testing.check_optimizer(cls, skip=("mirrored", "xla", "keras"))


def test_conformance_kit_full_adamw():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        tfopt.testing.check_optimizer(AdamW)


# ------------------------------------------------------------------------ bad hyperparameters
@pytest.mark.parametrize("cls, name, value", [
    (Nadam, "beta_1", 1.0), (Nadam, "beta_2", -0.1), (Nadam, "epsilon", -1e-7), (Nadam, "learning_rate", -1.0),
    (AdamW, "weight_decay", -0.1), (AdamW, "weight_decay", None),
    (AdamW, "beta_2", 1.0), (AdamW, "epsilon", -1.0),
    (Lion, "beta_1", 1.5), (Lion, "beta_2", 1.0), (Lion, "weight_decay", -0.1),
    (Lion, "learning_rate", float("nan")),
    (Lamb, "beta_1", -0.5), (Lamb, "beta_2", 1.0), (Lamb, "epsilon", -1.0),
])
def test_bad_hyperparameter_raises_naming_it(cls, name, value):
    with pytest.raises(ValueError, match=name):
        cls(**{name: value})


def test_adamw_weight_decay_given_twice_is_a_type_error_and_its_default_reaches_keras():
    import tfopt

    with pytest.raises(TypeError, match="multiple values for argument 'weight_decay'"):
        AdamW(1e-3, 0.01, weight_decay=0.5)
    assert float(AdamW(1e-3, 0.01).weight_decay) == 0.01
    assert float(tfopt.KerasOptimizer("AdamW").weight_decay) == 0.004
