"""Shared test setup: quiet TensorFlow, and a small Keras MLP trained on real digits."""

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # before anything imports tensorflow

import numpy as np
import pytest
import tensorflow as tf

# Two logical CPU devices, so MirroredStrategy has two replicas on this one-CPU machine
# (must happen before TensorFlow initialises its devices, hence here).
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

# Grappler's remapper fuses a model's MatMul + BiasAdd (+ activation) into one oneDNN kernel in
# graphs only; on some CPUs (seen on an AVX-512 AMD EPYC) that kernel rounds differently from the
# eager ops, so a model's gradients differ between eager and tf.function before any optimizer runs.
# The eager-equals-compiled tests are about the optimizers, so the test process turns that rewrite off.
tf.config.optimizer.set_experimental_options({"remapping": False})


def pytest_report_header(config):
    """One line on whether tfopt's native ops loaded here (building them first), and if not, why."""
    from tfopt.kernels import native

    native.load()
    found = native.diagnostics()
    if found["loaded"]:
        flags = " ".join(found["flags"]) or "(none)"
        return f"tfopt native kernels: loaded, flags: {flags} ({found['compiler_version']})"
    log = f" (full log: {found['log']})" if found["log"] else ""
    return f"tfopt native kernels: NOT loaded: {found['error']}{log}"


@pytest.fixture(scope="session")
def mirrored_strategy():
    """The one two-replica MirroredStrategy of the run (see ``tfopt.testing.two_replica_strategy``: a second
    strategy over the same devices reuses collective-op numbers and its all-reduces abort)."""
    from tfopt.testing import two_replica_strategy

    assert len(tf.config.list_logical_devices("CPU")) >= 2, "two logical CPUs are set up above"
    return two_replica_strategy()


@pytest.fixture(scope="session")
def digit_batches():
    """Ten batches of 12 real 8x8 digits (classes 0, 1, 2), pixels scaled to [0, 1], float32."""
    from sklearn.datasets import load_digits

    x, y = load_digits(n_class=3, return_X_y=True)
    x = (x[:120] / 16.0).astype(np.float32)
    return [(x[i : i + 12], y[i : i + 12]) for i in range(0, 120, 12)]


def make_mlp(seed=0):
    """Dense(8, relu) + Dense(3); the same seed gives bit-identical initial weights."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


@pytest.fixture
def train_in_lockstep(digit_batches):
    """``run(keras_opt, tfopt_opt, compiled=False)``: train two identical MLPs side by side.

    Returns, after each step, ``(keras_weights, tfopt_weights)`` as lists of NumPy arrays.
    ``compiled=True`` runs each model's whole training step inside a ``tf.function``.
    """
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def stepper(model, opt, compiled):
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))

        return tf.function(step) if compiled else step

    def run(keras_opt, tfopt_opt, compiled=False):
        models = make_mlp(), make_mlp()
        for a, b in zip(*(m.trainable_variables for m in models)):
            assert np.array_equal(a.numpy(), b.numpy()), "the two models must start identical"
        keras_opt.build(models[0].trainable_variables)  # Keras cannot create its slots inside tf.function
        steps = [stepper(m, o, compiled) for m, o in zip(models, (keras_opt, tfopt_opt))]
        history = []
        for x, y in digit_batches:
            for step in steps:
                step(tf.constant(x), tf.constant(y))
            history.append(tuple([v.numpy() for v in m.trainable_variables] for m in models))
        return history

    return run
