"""Helpers for the Keras-library rules' tests (test_rmsprop.py, test_adagrad.py, test_adadelta.py,
test_adamax.py): the same float32 steps through tfopt and through ``keras.optimizers``."""

import inspect

import keras
import numpy as np
import tensorflow as tf

SHAPES = [(7,), (4, 5)]
STEPS = 100


def lockstep(tfopt_opt, keras_opt, *, steps=STEPS, seed=0, shapes=SHAPES):
    """Step both optimizers ``steps`` times with the same random float32 gradients (eagerly).

    Returns ``(tfopt_variables, keras_variables)`` as NumPy arrays.
    """
    rng = np.random.default_rng(seed)
    init = [rng.normal(size=s).astype("float32") for s in shapes]
    ours = [tf.Variable(x) for x in init]
    theirs = [keras.Variable(x) for x in init]
    for _ in range(steps):
        grads = [tf.constant(rng.normal(size=s).astype("float32")) for s in shapes]
        tfopt_opt.apply_gradients(zip(grads, ours))
        keras_opt.apply_gradients(zip(grads, theirs))
    return ours, theirs


def numpy_of(variable):
    return keras.ops.convert_to_numpy(variable) if isinstance(variable, keras.Variable) else variable.numpy()


def max_relative_difference(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float32).tiny)))


def keras_defaults(keras_cls) -> dict:
    """The defaults of ``keras_cls``'s own arguments (before ``weight_decay`` and the base's)."""
    params = list(inspect.signature(keras_cls.__init__).parameters.values())[1:]
    names = [p.name for p in params]
    return {p.name: p.default for p in params[:names.index("weight_decay")]}


def tfopt_defaults(cls) -> dict:
    """The defaults of ``cls``'s own declared arguments (not the base's: weight decay, clipping, ...)."""
    base = ("fused", "clipnorm", "clipvalue", "global_clipnorm", "name", "weight_decay")
    return {p.name: p.default for p in inspect.signature(cls).parameters.values() if p.name not in base}
