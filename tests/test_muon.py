"""tfopt.Muon against Keras 3's Muon and a float64 NumPy reference.

Rule (tfopt/optimizers/muon.py): a 2-D variable takes the Muon step, m <- mu*m + g, G = g + mu*m (nesterov) or m,
X <- X - lr * NS5(G) * sqrt(max(r, k)) * rms_rate, NS5 the quintic Newton-Schulz iteration (a, b, c); every other
variable, and 2-D ones named like an embedding or matching exclude_layers, Keras Muon's AdamW step (epsilon hat,
lr * adam_lr_ratio). Weight decay x <- x - x*wd*lr first: weight_decay on Muon variables, adam_weight_decay on
AdamW ones.
"""

import inspect
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_rules import lockstep, max_relative_difference, numpy_of, tfopt_defaults
from numpy.testing import assert_allclose

import tfopt
from tfopt.optimizers.muon import Muon

VARIANTS = [
    {},
    {"learning_rate": 0.01, "nesterov": False, "rms_rate": None, "momentum": 0.9, "ns_steps": 3},
    {"weight_decay": None, "adam_weight_decay": 0.01, "adam_lr_ratio": 0.1, "adam_beta_1": 0.8, "epsilon": 1e-3},
]
SHAPES = [(7,), (4, 5), (6, 3)]  # AdamW, Muon (wide), Muon (tall: transposed)


def test_defaults_are_keras():
    keras_params = inspect.signature(keras.optimizers.Muon.__init__).parameters
    ours = tfopt_defaults(Muon)
    assert ours == {name: keras_params[name].default for name in ours}
    assert inspect.signature(Muon).parameters["weight_decay"].default == keras_params["weight_decay"].default == 0.004
    assert float(Muon().weight_decay) == 0.004 and Muon(weight_decay=None).weight_decay is None


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_matches_keras_over_100_steps(kwargs):
    """The 1-D variable (AdamW step) is bit for bit Keras's, variable and both slots. The 2-D ones (Muon step)
    are within 1e-5 relative (seen: 7e-7), not bitwise: tfopt writes four of Keras's products and sums so that a
    graph computes them as eagerly does (module docstring); Keras's own eager and fit steps differ there. Their
    momentum, a decayed sum of gradients with entries near 0, within 1e-5 of its largest entry (seen: 3e-7)."""
    ours_opt, keras_opt = Muon(**kwargs), keras.optimizers.Muon(**kwargs)
    ours, theirs = lockstep(ours_opt, keras_opt, shapes=SHAPES)
    for i, (x, y) in enumerate(zip(ours, theirs)):
        assert max_relative_difference(x.numpy(), numpy_of(y)) <= 1e-5, f"variable {i}"
        momentum = ours_opt.get_slot(x, "momentum").numpy()
        want = numpy_of(keras_opt.momentums[i])
        assert np.max(np.abs(momentum - want)) <= 1e-5 * np.max(np.abs(want)), f"momentum {i}"
        if i == 0:
            np.testing.assert_array_equal(x.numpy(), numpy_of(y))
            np.testing.assert_array_equal(momentum, numpy_of(keras_opt.momentums[i]))
            np.testing.assert_array_equal(ours_opt.get_slot(x, "velocity").numpy(),
                                          numpy_of(keras_opt.adam_velocities[i]))
        else:
            assert keras_opt.adam_velocities[i] is None and not ours_opt.get_slot(x, "velocity").numpy().any()


def test_names_choose_the_adamw_step_as_in_keras():
    """exclude_embeddings and exclude_layers (regular expressions on the path): the same variables take AdamW."""
    names = ["dense/kernel", "token_embedding/embeddings", "head/kernel"]
    rng = np.random.default_rng(3)
    init = [rng.normal(size=(4, 3)).astype("float32") for _ in names]
    ours = [tf.Variable(x, name=n) for x, n in zip(init, names)]
    theirs = [keras.Variable(x, name=n.split("/")[-1]) for x, n in zip(init, names)]
    ours_opt = Muon(0.01, exclude_layers=["^head"])
    keras_opt = keras.optimizers.Muon(0.01, exclude_layers=["^head"])
    for v, n in zip(theirs, names):  # a standalone Keras variable's path is its name: give it a layer's path
        v._path = n
    keras_opt.build(theirs)
    adamw = [keras_opt._should_use_adamw(v) for v in theirs]
    assert adamw == [False, True, True] == [ours_opt.uses_adamw(v) for v in ours]
    for _ in range(5):
        grads = [tf.constant(rng.normal(size=(4, 3)).astype("float32")) for _ in names]
        ours_opt.apply_gradients(zip(grads, ours))
        keras_opt.apply_gradients(zip(grads, theirs))
    for i in (1, 2):  # the AdamW ones: bit for bit
        np.testing.assert_array_equal(ours[i].numpy(), numpy_of(theirs[i]))
    assert max_relative_difference(ours[0].numpy(), numpy_of(theirs[0])) <= 1e-6


def numpy_newton_schulz(g, steps, a=3.4445, b=-4.7750, c=2.0315):
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def numpy_muon(xs, grads, *, lr=0.001, mu=0.95, b1=0.9, b2=0.999, eps=1e-7, wd=0.004, adam_wd=0.004):
    xs = [np.array(x, np.float64) for x in xs]
    ms, vs = [np.zeros_like(x) for x in xs], [np.zeros_like(x) for x in xs]
    for t, gs in enumerate(grads, 1):
        for i, g in enumerate(gs):
            if xs[i].ndim == 2:
                xs[i] = xs[i] - xs[i] * wd * lr
                ms[i] = mu * ms[i] + g
                update = numpy_newton_schulz(g + mu * ms[i], 5)
                xs[i] = xs[i] - lr * update * np.sqrt(max(xs[i].shape)) * 0.2
            else:
                xs[i] = xs[i] - xs[i] * adam_wd * lr
                ms[i] = b1 * ms[i] + (1 - b1) * g
                vs[i] = b2 * vs[i] + (1 - b2) * g**2
                alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
                xs[i] = xs[i] - ms[i] * alpha / (np.sqrt(vs[i]) + eps)
    return xs, ms, vs


def test_float64_matches_numpy_reference():
    rng = np.random.default_rng(1)
    init = [rng.normal(size=s) for s in SHAPES]
    grads = [[rng.normal(size=s) for s in SHAPES] for _ in range(6)]
    variables = [tf.Variable(x) for x in init]
    opt = Muon()
    for g in grads:
        opt.apply_gradients(zip([tf.constant(x) for x in g], variables))
    want, ms, vs = numpy_muon(init, grads)
    for v, x, m, s in zip(variables, want, ms, vs):
        assert_allclose(v.numpy(), x, rtol=1e-10, atol=1e-14)
        assert_allclose(opt.get_slot(v, "momentum").numpy(), m, rtol=1e-12)
        assert_allclose(opt.get_slot(v, "velocity").numpy(), s, rtol=1e-12)


def test_two_weight_decays_in_as_keras_fit():
    """as_keras() keeps Muon's own weight decay (weight_decay on Muon variables, adam_weight_decay on the others,
    which Keras's single weight_decay cannot express): fit equals the tfopt custom loop."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")

    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(2)])

    make = lambda: Muon(0.02, weight_decay=0.5, adam_weight_decay=0.0)  # noqa: E731
    fitted, looped, opt = model(), model(), make()
    fitted.compile(optimizer=make().as_keras(), loss="mse")
    fitted.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, looped(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, looped.trainable_variables), looped.trainable_variables))

    for _ in range(2):
        for i in range(0, 32, 8):
            step(x[i:i + 8], y[i:i + 8])
    for a, b in zip(fitted.trainable_variables, looped.trainable_variables):
        assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    kernel = looped.trainable_variables[0].numpy()
    assert not np.allclose(kernel, model().trainable_variables[0].numpy(), atol=1e-2)  # it trained


def test_conformance_kit_whole():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        report = tfopt.testing.check_optimizer(Muon)
    assert {"keras", "xla", "mirrored", "tf_function"} <= set(report.checked), report


@pytest.mark.parametrize("kwargs, name", [
    ({"momentum": 1.0}, "momentum"), ({"adam_beta_1": -0.1}, "adam_beta_1"), ({"adam_beta_2": 1.0}, "adam_beta_2"),
    ({"epsilon": -1e-7}, "epsilon"), ({"ns_steps": 2.5}, "ns_steps"), ({"rms_rate": -0.2}, "rms_rate"),
    ({"exclude_layers": "dense"}, "exclude_layers"), ({"exclude_layers": ["(unclosed"]}, "exclude_layers"),
    ({"muon_a": float("nan")}, "muon_a"), ({"adam_weight_decay": -1.0}, "adam_weight_decay"),
    ({"weight_decay": -1.0}, "weight_decay"),
])
def test_bad_hyperparameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Muon(**kwargs)


def test_the_rule_compiler_declines_muon():
    """The compiler traces ``update`` on tensors of unknown shape; Muon's step depends on the rank, so it must not
    compile an AdamW-only trace and run it on the 2-D variables."""
    from tfopt.kernels import compiler

    assert "known rank" in compiler.explain(Muon())
