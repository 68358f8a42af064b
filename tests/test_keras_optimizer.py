"""``opt.as_keras()``: tfopt's rules inside ``model.compile`` / ``model.fit`` and ``.keras`` saving."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfopt

X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
Y = np.random.default_rng(1).normal(size=(64, 2)).astype("float32")
BATCH = 16

RULES = {
    "gradient_descent": lambda: tfopt.GradientDescent(0.1),
    "momentum": lambda: tfopt.Momentum(0.05, momentum=0.9),
    "nesterov": lambda: tfopt.Momentum(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: tfopt.Adam(0.01, epsilon=1e-3),
}
each_rule = pytest.mark.parametrize("name", list(RULES))


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(2)])


def custom_loop(model, opt, epochs):
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for _ in range(epochs):
        for i in range(0, len(X), BATCH):
            step(X[i : i + BATCH], Y[i : i + BATCH])


def fit(model, keras_opt, epochs, **kw):
    model.compile(optimizer=keras_opt, loss="mse")
    return model.fit(X, Y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, **kw)


@each_rule
def test_fit_equals_the_custom_loop(name):
    fitted, looped = make_model(), make_model()
    fit(fitted, RULES[name]().as_keras(), epochs=3)
    custom_loop(looped, RULES[name](), epochs=3)
    for a, b in zip(fitted.trainable_variables, looped.trainable_variables):
        if name == "gradient_descent":
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        else:  # the same ops in the same order; allow float noise from Keras's graph
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_as_keras_is_a_keras_optimizer_with_the_same_rule():
    keras_opt = tfopt.Adam(0.02, beta_1=0.8, epsilon=1e-5, clipnorm=1.0).as_keras()
    assert isinstance(keras_opt, keras.optimizers.Optimizer)
    assert keras_opt.rule == "Adam"
    assert keras_opt.rule_config == {"beta_1": 0.8, "beta_2": 0.999, "epsilon": 1e-5}
    assert keras_opt.clipnorm == 1.0
    assert float(keras_opt.learning_rate) == pytest.approx(0.02)


def test_learning_rate_schedule_in_fit_equals_the_loop():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    fitted, looped = make_model(), make_model()
    fit(fitted, tfopt.GradientDescent(schedule).as_keras(), epochs=2)
    custom_loop(looped, tfopt.GradientDescent(schedule), epochs=2)
    for a, b in zip(fitted.trainable_variables, looped.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_callbacks_change_the_learning_rate():
    keras_opt = tfopt.Momentum(0.05).as_keras()
    history = fit(
        make_model(),
        keras_opt,
        epochs=4,
        callbacks=[keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.05 * 0.1**epoch)],
    )
    assert float(keras_opt.learning_rate) == pytest.approx(0.05 * 0.1**3)
    assert history.history["learning_rate"][-1] == pytest.approx(0.05 * 0.1**3)


def test_reduce_lr_on_plateau_lowers_the_rate():
    keras_opt = tfopt.Adam(0.01).as_keras()
    fit(
        make_model(),
        keras_opt,
        epochs=3,
        callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9)],
    )
    # epoch 1 sets the reference; no later epoch improves by 1e9, so epochs 2 and 3 halve the rate
    assert float(keras_opt.learning_rate) == pytest.approx(0.01 * 0.5**2)


@each_rule
def test_keras_config_round_trip(name):
    keras_opt = RULES[name]().as_keras()
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(keras_opt))
    assert type(clone) is type(keras_opt)
    assert clone.get_config() == keras_opt.get_config()


def test_unknown_rule_names_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown tfopt rule 'Lion'.*Adam"):
        tfopt.KerasOptimizer("Lion")


@each_rule
def test_saved_model_resumes_training_where_it_stopped(name, tmp_path):
    model = make_model()
    fit(model, RULES[name]().as_keras(), epochs=2)
    path = tmp_path / "model.keras"
    model.save(path)
    model.fit(X, Y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)

    restored = keras.models.load_model(path)
    assert isinstance(restored.optimizer, tfopt.KerasOptimizer)
    assert int(restored.optimizer.iterations.numpy()) == 2 * len(X) // BATCH
    restored.fit(X, Y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(model.trainable_variables, restored.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@each_rule
def test_mixed_precision_fit_and_custom_loop(name, mixed_precision):
    fitted = make_model()
    fit(fitted, RULES[name]().as_keras(), epochs=2)
    assert isinstance(fitted.optimizer, keras.optimizers.LossScaleOptimizer)
    looped = make_model()
    assert looped.layers[0].compute_dtype == "float16"
    custom_loop(looped, RULES[name](), epochs=2)
    for a, b in zip(fitted.trainable_variables, looped.trainable_variables):
        assert a.dtype == "float32"
        assert np.all(np.isfinite(a.numpy())) and np.all(np.isfinite(b.numpy()))
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-2, atol=2e-3)  # float16 compute


@pytest.mark.parametrize("via", ["module", "keras"])
def test_float16_adam_stays_finite_on_zero_gradients(via):
    """epsilon = 1e-7 underflows in float16; the update is computed in float32."""
    x = tf.Variable(tf.constant([1.0, -2.0], tf.float16))
    opt = tfopt.Adam(0.1) if via == "module" else tfopt.Adam(0.1).as_keras()
    for _ in range(3):
        opt.apply_gradients([(tf.zeros(2, tf.float16), x)])
    assert x.dtype == tf.float16
    np.testing.assert_array_equal(x.numpy(), np.array([1.0, -2.0], np.float16))
