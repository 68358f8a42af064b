"""``opt.as_keras()``: tfopt's rules, built-in or the user's own, inside ``model.compile`` / ``model.fit`` and
``.keras`` saving. The user's rule is the examples package's (``examples/my_rules/rules.py``)."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfopt

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))
from my_rules.rules import RMSprop  # noqa: E402  (a user's rule in a module of its own)

X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
Y = np.random.default_rng(1).normal(size=(64, 2)).astype("float32")
BATCH = 16

RULES = {
    "gradient_descent": lambda: tfopt.GradientDescent(0.1),
    "momentum": lambda: tfopt.Momentum(0.05, momentum=0.9),
    "nesterov": lambda: tfopt.Momentum(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: tfopt.Adam(0.01, epsilon=1e-3),
    "user_rmsprop": lambda: RMSprop(0.01, rho=0.8, epsilon=1e-3),
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
    with pytest.raises(ValueError, match="Unknown tfopt rule 'Frobnicate'.*Adam.*package.module:ClassName"):
        tfopt.KerasOptimizer("Frobnicate")


def test_a_user_rule_is_named_by_its_import_path():
    keras_opt = RMSprop(0.02, rho=0.8).as_keras()
    assert keras_opt.rule == "my_rules.rules:RMSprop" and keras_opt.rule_class is RMSprop
    assert keras_opt.rule_config == {"rho": 0.8, "epsilon": 1e-7}
    assert keras_opt.name == "tfopt_rmsprop"
    config = keras_opt.get_config()
    json.dumps(config)  # what a .keras file holds
    assert tfopt.KerasOptimizer.from_config(config).rule_class is RMSprop
    assert tfopt.KerasOptimizer("my_rules.rules:RMSprop").rule_class is RMSprop
    assert tfopt.KerasOptimizer(RMSprop).rule == "my_rules.rules:RMSprop"
    assert tfopt.Adam().as_keras().rule == "Adam"  # built-ins keep their short names (older files load)
    assert tfopt.KerasOptimizer("tfopt.optimizers.adam:Adam").rule == "Adam"


@pytest.mark.parametrize("rule, message", [
    ("no_such_package.rules:RMSprop", "Cannot import tfopt rule 'no_such_package.rules:RMSprop': "
                                      "ModuleNotFoundError: No module named 'no_such_package'"),
    ("my_rules.rules:RMSpro", "module 'my_rules.rules' has no 'RMSpro'; it defines the tfopt optimizers RMSprop"),
    ("my_rules.rules:tf", "'my_rules.rules:tf' is not a tfopt.Optimizer subclass"),
    ("tfopt.core.optimizer:Optimizer", "the base class"),
    ("__main__:NoSuchRule", "defined in another program's __main__; define the class at the top level of an "
                            "importable module"),
    ("tests.somewhere:f.<locals>.Rule", "defined inside a function"),
    (int, "'int' is not a tfopt.Optimizer subclass"),
])
def test_bad_rules_are_one_clear_error(rule, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")) as caught:
        tfopt.KerasOptimizer(rule)
    assert "\n" not in str(caught.value)


def test_user_rule_with_learning_rate_callbacks():
    keras_opt = RMSprop(0.05).as_keras()
    fit(make_model(), keras_opt, epochs=3,
        callbacks=[keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.05 * 0.1**epoch)])
    assert float(keras_opt.learning_rate) == pytest.approx(0.05 * 0.1**2)
    keras_opt = RMSprop(0.01).as_keras()
    fit(make_model(), keras_opt, epochs=3,
        callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9)])
    assert float(keras_opt.learning_rate) == pytest.approx(0.01 * 0.5**2)


def test_a_rule_defined_in_a_function_trains_and_warns_when_saved(tmp_path):
    class Local(tfopt.Optimizer):
        slot_names = ()

        def update(self, grad, slots, *, learning_rate, **_):
            return learning_rate * grad, {}

    model = make_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fit itself does not warn
        fit(model, Local(0.1).as_keras(), epochs=1)
    path = tmp_path / "local.keras"
    with pytest.warns(UserWarning, match="defined inside a function.*define it in an importable module"):
        model.save(path)
    with pytest.raises(ValueError, match="defined inside a function"):
        keras.models.load_model(path)
    restored = keras.models.load_model(path, custom_objects={"Local": Local})  # the way back
    assert restored.optimizer.rule_class is Local


def test_chain_round_trips_through_keras_config():
    """A rule whose config nests others' (``tfopt.chain``) is rebuilt with ``from_config``."""
    try:
        chain, transforms = tfopt.chain, tfopt.transforms
    except (ImportError, AttributeError):
        chain = transforms = None
    if not callable(chain) or not hasattr(transforms, "scale_by_adam"):
        pytest.skip("tfopt.chain is not there yet")
    keras_opt = chain(transforms.scale_by_adam(), transforms.scale_by_learning_rate(1e-2)).as_keras()
    fit(make_model(), keras_opt, epochs=1)
    config = json.loads(json.dumps(keras_opt.get_config()))
    clone = tfopt.KerasOptimizer.from_config(config)
    assert clone.rule == keras_opt.rule and clone.get_config() == keras_opt.get_config()


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


LOAD_IN_A_FRESH_PROCESS = """
import sys
import numpy as np, tensorflow as tf, keras
tf.config.optimizer.set_experimental_options({{"remapping": False}})  # as the test process (conftest.py)
import tfopt
model = keras.models.load_model({path!r})
opt = model.optimizer
assert opt.rule == "my_rules.rules:RMSprop" and opt.rule_class.__module__ == "my_rules.rules", opt.rule
assert int(opt.iterations) == {steps}, int(opt.iterations)
x, y = np.load({data!r})["x"], np.load({data!r})["y"]
model.fit(x, y, batch_size={batch}, epochs=2, shuffle=False, verbose=0)
np.savez({out!r}, *[w.numpy() for w in model.trainable_variables])
print("CONTINUED")
"""


def test_user_rule_saved_model_loads_and_resumes_in_a_fresh_process(tmp_path):
    """The rule is found again by its import path: the way another program loads the file."""
    model = make_model()
    fit(model, RMSprop(0.01, rho=0.8).as_keras(), epochs=2)
    path, data, out = tmp_path / "model.keras", tmp_path / "data.npz", tmp_path / "out.npz"
    model.save(path)
    np.savez(data, x=X, y=Y)
    model.fit(X, Y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    script = LOAD_IN_A_FRESH_PROCESS.format(path=str(path), data=str(data), out=str(out), batch=BATCH,
                                            steps=2 * len(X) // BATCH)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(EXAMPLES), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert "CONTINUED" in done.stdout, done.stderr[-3000:]
    continued = np.load(out)
    for i, weight in enumerate(model.trainable_variables):
        np.testing.assert_allclose(continued[f"arr_{i}"], weight.numpy(), rtol=1e-6, atol=1e-7)


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


# ------------------------------------------------------------------ wrappers: KerasWrapper
WRAPPERS = {  # learning rates exactly representable in float32 (see test_wrapper_fit_equals_the_custom_loop)
    "lookahead": lambda: tfopt.Lookahead(tfopt.Adam(0.015625, epsilon=1e-3), sync_period=3, slow_step_size=0.4),
    "moving_average": lambda: tfopt.MovingAverage(tfopt.Momentum(0.0625, momentum=0.9), average_decay=0.8),
    "multi_steps": lambda: tfopt.MultiSteps(tfopt.Adam(0.015625), every_k=3),
    "apply_if_finite": lambda: tfopt.ApplyIfFinite(tfopt.Adam(0.015625, clipnorm=0.5, weight_decay=0.25)),
    "nested": lambda: tfopt.ApplyIfFinite(tfopt.Lookahead(tfopt.MultiSteps(tfopt.Momentum(0.0625), every_k=2))),
}
each_wrapper = pytest.mark.parametrize("name", list(WRAPPERS))


def wrapper_state(opt, variables) -> dict:
    """Variables, every slot of every level, and every counter of a tfopt wrapper."""
    found = {}
    level = opt
    while level is not None:
        found[f"{type(level).__name__} iterations"] = level.iterations.numpy()
        if hasattr(level, "skipped_steps"):
            found["skipped_steps"] = level.skipped_steps.numpy()
        level = getattr(level, "inner_optimizer", None)
    for i, v in enumerate(variables):
        found[f"variable {i}"] = v.numpy()
        for name in opt.slot_names:
            found[f"{name} {i}"] = opt.get_slot(v, name).numpy()
    return found


@each_wrapper
def test_wrapper_fit_equals_the_custom_loop(name):
    """``wrapper.as_keras()`` in ``fit`` runs the tfopt wrapper's own ``apply_gradients``: variables, every slot of
    every level and every counter are bit for bit the custom loop's. (Bit for bit because the rates are exactly
    representable in float32: the learning rate is Keras's float32 variable, the loop's a float64 one; with 0.01
    they could differ in the last bit.) The slots are Keras's variables: ``keras_opt.variables``."""
    fitted, looped = make_model(), make_model()
    keras_opt = WRAPPERS[name]().as_keras()
    assert isinstance(keras_opt, keras.optimizers.Optimizer)
    fit(fitted, keras_opt, epochs=3)
    opt = WRAPPERS[name]()
    custom_loop(looped, opt, epochs=3)
    got, want = wrapper_state(keras_opt.tfopt_optimizer, fitted.trainable_variables), wrapper_state(
        opt, looped.trainable_variables)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert int(keras_opt.iterations.numpy()) == int(opt.iterations.numpy())
    keras_ids = {id(v.value) for v in keras_opt.variables}
    for v in fitted.trainable_variables:
        for slot in keras_opt.tfopt_optimizer.slot_names:
            assert id(keras_opt.tfopt_optimizer.get_slot(v, slot)) in keras_ids, slot


@pytest.mark.parametrize("name", ["nested", "moving_average"])  # (nested: ApplyIfFinite, Lookahead, MultiSteps)
def test_wrapper_saved_model_resumes_training_where_it_stopped(name, tmp_path):
    """The ``.keras`` file holds every level's slots and counters: a loaded model continues bit for bit."""
    model = make_model()
    fit(model, WRAPPERS[name]().as_keras(), epochs=1)  # 4 steps: mid-accumulation / between syncs
    path = tmp_path / "model.keras"
    model.save(path)
    config = json.loads(json.dumps(model.optimizer.get_config()))
    assert config["rule"] == type(WRAPPERS[name]()).__name__  # the rate is Keras's, not in rule_config:
    assert "learning_rate" not in json.dumps(config["rule_config"])
    model.fit(X, Y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)

    restored = keras.models.load_model(path)
    assert isinstance(restored.optimizer, tfopt.integrations.keras_optimizer.KerasWrapper)
    assert restored.optimizer.get_config() == model.optimizer.get_config()
    restored.fit(X, Y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    got = wrapper_state(restored.optimizer.tfopt_optimizer, restored.trainable_variables)
    want = wrapper_state(model.optimizer.tfopt_optimizer, model.trainable_variables)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_moving_average_in_keras_swaps_the_averages_in_for_evaluation():
    model = make_model()
    keras_opt = tfopt.MovingAverage(tfopt.Adam(0.01), average_decay=0.9).as_keras()
    fit(model, keras_opt, epochs=2)
    weights = [v.numpy() for v in model.trainable_variables]
    averages = [keras_opt.tfopt_optimizer.get_slot(v, "average").numpy() for v in model.trainable_variables]
    loss = model.evaluate(X, Y, verbose=0)
    with keras_opt.averaged(model.trainable_variables):
        for v, a in zip(model.trainable_variables, averages):
            np.testing.assert_array_equal(v.numpy(), a)
        averaged_loss = model.evaluate(X, Y, verbose=0)
    hidden = np.tanh(X @ averages[0] + averages[1]) @ averages[2] + averages[3]
    assert averaged_loss == pytest.approx(float(np.mean((hidden - Y) ** 2)), rel=1e-5) and averaged_loss != loss
    for v, w in zip(model.trainable_variables, weights):
        np.testing.assert_array_equal(v.numpy(), w)  # swapped back exactly


def test_apply_if_finite_in_fit_skips_the_nan_batch():
    x = X.copy()
    x[BATCH + 3, 1] = np.nan  # the second batch of each epoch
    model = make_model()
    keras_opt = tfopt.ApplyIfFinite(tfopt.Adam(0.01)).as_keras()
    model.compile(optimizer=keras_opt, loss="mse")
    model.fit(x, Y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert int(keras_opt.skipped_steps.numpy()) == 2 and int(keras_opt.iterations.numpy()) == 6
    assert all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)


def test_wrapper_learning_rate_is_keras_and_callbacks_change_it():
    keras_opt = tfopt.Lookahead(tfopt.Momentum(0.05)).as_keras()
    fit(make_model(), keras_opt, epochs=3,
        callbacks=[keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.05 * 0.1**epoch)])
    assert float(keras_opt.learning_rate) == pytest.approx(0.05 * 0.1**2)
    inner = keras_opt.tfopt_optimizer.inner_optimizer
    assert float(tf.convert_to_tensor(inner.learning_rate)) == pytest.approx(0.05 * 0.1**2)


def test_wrapper_weight_decay_exclusions_reach_the_inner_rule():
    """Weight decay is the inner rule's: exclusions made on the wrapper before as_keras() or on the Keras optimizer
    reach it (the excluded bias keeps its value under a zero gradient, the kernel decays)."""
    for where in ("tfopt", "keras"):
        model = make_model()
        wrapper = tfopt.Lookahead(tfopt.GradientDescent(0.5, weight_decay=0.5))
        if where == "tfopt":
            wrapper.exclude_from_weight_decay(var_names=["bias"])
            keras_opt = wrapper.as_keras()
        else:
            keras_opt = wrapper.as_keras()
            keras_opt.exclude_from_weight_decay(var_names=["bias"])
        kernel, bias = model.layers[0].kernel, model.layers[0].bias
        bias.assign(np.ones(bias.shape, "float32"))
        before = kernel.numpy()
        keras_opt.apply_gradients([(tf.zeros_like(kernel), kernel), (tf.zeros_like(bias), bias)])
        np.testing.assert_array_equal(bias.numpy(), np.ones(bias.shape, "float32"))
        np.testing.assert_allclose(kernel.numpy(), before * 0.75, rtol=1e-6)


def test_wrapper_keras_options_and_kinds_are_checked():
    with pytest.raises(ValueError, match="does not take clipnorm.*inner tfopt optimizer"):
        tfopt.integrations.keras_optimizer.KerasWrapper("Lookahead", {"optimizer": {"class": "Adam"}}, clipnorm=1.0)
    with pytest.raises(ValueError, match="Lookahead is a tfopt wrapper.*KerasWrapper"):
        tfopt.KerasOptimizer("Lookahead")
    with pytest.raises(ValueError, match="Adam is not a tfopt wrapper"):
        tfopt.integrations.keras_optimizer.KerasWrapper("Adam")


def test_wrapper_mixed_precision_fit(mixed_precision):
    """Under ``mixed_float16`` Keras wraps the KerasWrapper in its LossScaleOptimizer, which calls our ``apply``."""
    fitted = make_model()
    fit(fitted, WRAPPERS["lookahead"]().as_keras(), epochs=2)
    assert isinstance(fitted.optimizer, keras.optimizers.LossScaleOptimizer)
    looped = make_model()
    custom_loop(looped, WRAPPERS["lookahead"](), epochs=2)
    for a, b in zip(fitted.trainable_variables, looped.trainable_variables):
        assert np.all(np.isfinite(a.numpy()))
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-2, atol=2e-3)  # float16 compute
