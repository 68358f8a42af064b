"""The tfopt contract holds for my optimizers: ``python -m pytest my_rules`` (from examples/)."""

import tfopt.testing
from my_rules.rules import RMSprop


def test_rmsprop_keeps_the_tfopt_contract():
    tfopt.testing.check_optimizer(RMSprop)  # raises AssertionError naming the property that broke


def test_rmsprop_follows_its_formula():
    import numpy as np
    import tensorflow as tf

    x = tf.Variable([1.0, -2.0], dtype=tf.float64)
    opt = RMSprop(learning_rate=0.1, rho=0.5)
    v = np.zeros(2)
    expected = x.numpy()
    for g in ([0.5, -1.0], [2.0, 0.25]):
        opt.apply_gradients([(tf.constant(g, tf.float64), x)])
        v = 0.5 * v + 0.5 * np.square(g)
        expected = expected - 0.1 * np.array(g) / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-12)
