"""The update rules under test, built alike for the fast-path test modules (test_fused, test_native)."""

import numpy as np

import tfopt

FACTORIES = {
    "gradient_descent": lambda **kw: tfopt.GradientDescent(**kw),
    "momentum": lambda **kw: tfopt.Momentum(**{"momentum": 0.9, **kw}),
    "nesterov": lambda **kw: tfopt.Momentum(**{"momentum": 0.9, "nesterov": True, **kw}),
    "adam": lambda **kw: tfopt.Adam(**{"epsilon": 1e-3, **kw}),
}


def make(name, **kw):
    """The rule ``name`` at learning rate 0.05 unless ``kw`` says otherwise."""
    kw.setdefault("learning_rate", 0.05)
    return FACTORIES[name](**kw)


def assert_bitwise_equal(got, want):
    """Same dtypes, shapes and bits, array by array."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.atleast_1d(a).view(np.uint8), np.atleast_1d(b).view(np.uint8))
