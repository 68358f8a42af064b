"""tf.distribute: MirroredStrategy over this machine's two logical CPUs (set up in conftest.py)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfopt

X = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
Y = np.random.default_rng(1).normal(size=(32, 2)).astype("float32")
GLOBAL_BATCH = 8

RULES = {
    "gradient_descent": lambda: tfopt.GradientDescent(0.1),
    "momentum": lambda: tfopt.Momentum(0.05, momentum=0.9),
    "adam": lambda: tfopt.Adam(0.01),
}
each_rule = pytest.mark.parametrize("name", list(RULES))


@pytest.fixture(scope="module")
def strategy(mirrored_strategy):
    return mirrored_strategy


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(2)])


def batches():
    return tf.data.Dataset.from_tensor_slices((X, Y)).batch(GLOBAL_BATCH)


def loss_of(model, x, y):
    """Summed over the replica's examples, divided by the global batch size (as Keras asks)."""
    return tf.reduce_sum((model(x) - y) ** 2) / GLOBAL_BATCH


def single_device_run(opt_factory, epochs=2):
    model, opt = make_model(), opt_factory()

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_of(model, x, y)
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for _ in range(epochs):
        for x, y in batches():
            step(x, y)
    return model, opt


def mirrored_run(strategy, opt_factory, epochs=2, model=None, opt=None):
    if model is None:
        with strategy.scope():
            model, opt = make_model(), opt_factory()

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_of(model, x, y)
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    @tf.function
    def step(x, y):
        strategy.run(replica_step, args=(x, y))

    dataset = strategy.experimental_distribute_dataset(batches())
    for _ in range(epochs):
        for x, y in dataset:
            step(x, y)
    return model, opt


@pytest.fixture(scope="module")
def one_epoch(strategy):
    """Per rule: (mirrored model, its optimizer, single-device weights after 1 and 2 epochs)."""
    results = {}
    for name, factory in RULES.items():
        model, opt = mirrored_run(strategy, factory, epochs=1)
        after_one = [v.numpy() for v in single_device_run(factory, epochs=1)[0].trainable_variables]
        after_two = [v.numpy() for v in single_device_run(factory, epochs=2)[0].trainable_variables]
        results[name] = model, opt, after_one, after_two
    return results


def assert_close(actual, expected):
    # the all-reduce adds the two halves of each batch in another order: float noise only
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@each_rule
def test_two_replicas_equal_one_device(one_epoch, name):
    model, opt, after_one, _ = one_epoch[name]
    assert int(opt.iterations.numpy()) == len(X) // GLOBAL_BATCH
    assert_close([v.numpy() for v in model.trainable_variables], after_one)


@pytest.mark.parametrize("clipping", [{"global_clipnorm": 0.05}, {"clipnorm": 0.05}, {"clipvalue": 0.01}])
def test_clipping_under_two_replicas_equals_one_device(strategy, clipping):
    """The global norm used to fail in the merge call (per-replica gradients have no dtype)."""
    factory = lambda: tfopt.Adam(0.01, **clipping)  # noqa: E731
    model, _ = mirrored_run(strategy, factory, epochs=1)
    assert_close([v.numpy() for v in model.trainable_variables],
                 [v.numpy() for v in single_device_run(factory, epochs=1)[0].trainable_variables])
    unclipped = [v.numpy() for v in single_device_run(lambda: tfopt.Adam(0.01), epochs=1)[0].trainable_variables]
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(unclipped, [v.numpy() for v in model.trainable_variables]))


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_slots_are_mirrored_beside_their_variables(strategy, one_epoch, name):
    model, opt, _, _ = one_epoch[name]  # the first apply happened inside strategy.run
    for variable in model.trainable_variables:
        for slot_name in opt.slot_names:
            slot = opt.get_slot(variable, slot_name)
            assert isinstance(slot, tf.distribute.DistributedValues)
            components = strategy.experimental_local_results(slot)
            assert [c.device for c in components] == [
                c.device for c in strategy.experimental_local_results(variable.value)
            ]
            np.testing.assert_array_equal(components[0].numpy(), components[1].numpy())
            assert np.any(components[0].numpy() != 0)


@pytest.fixture(scope="module")
def adam_checkpoint(one_epoch, tmp_path_factory):
    model, opt, _, after_two = one_epoch["adam"]
    path = tf.train.Checkpoint(model=model, optimizer=opt).write(str(tmp_path_factory.mktemp("ckpt") / "ckpt"))
    return path, after_two


def test_checkpoint_from_a_strategy_restores_under_the_strategy(strategy, adam_checkpoint):
    path, after_two = adam_checkpoint
    with strategy.scope():
        model, opt = make_model(seed=5), RULES["adam"]()
    tf.train.Checkpoint(model=model, optimizer=opt).read(path).assert_existing_objects_matched()
    mirrored_run(strategy, None, epochs=1, model=model, opt=opt)
    assert int(opt.iterations.numpy()) == 2 * len(X) // GLOBAL_BATCH
    assert_close([v.numpy() for v in model.trainable_variables], after_two)


def test_checkpoint_from_a_strategy_restores_on_one_device(adam_checkpoint):
    path, after_two = adam_checkpoint
    model, opt = make_model(seed=5), RULES["adam"]()
    status = tf.train.Checkpoint(model=model, optimizer=opt).read(path)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_of(model, x, y)
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for x, y in batches():
        step(x, y)
    status.assert_consumed()
    assert int(opt.iterations) == 2 * len(X) // GLOBAL_BATCH
    assert_close([v.numpy() for v in model.trainable_variables], after_two)


def test_optimizer_created_outside_the_scope_says_what_to_do(strategy):
    with strategy.scope():
        model = make_model()
    opt = tfopt.Adam()
    with pytest.raises(ValueError, match="inside `with strategy.scope"):
        mirrored_run(strategy, None, epochs=1, model=model, opt=opt)


def test_unsupported_strategy_is_named():
    strategy = tf.distribute.experimental.CentralStorageStrategy()
    with strategy.scope():
        x = tf.Variable([1.0, 2.0])
        opt = tfopt.GradientDescent(0.1)
        with pytest.raises(NotImplementedError, match="CentralStorageStrategy.*MirroredStrategy"):
            opt.apply_gradients([(tf.ones(2), x)])


def test_fit_with_as_keras_under_mirrored_strategy(strategy):
    with strategy.scope():
        model = make_model()
        model.compile(optimizer=tfopt.Momentum(0.05, momentum=0.9).as_keras(), loss="mse")
    model.fit(X, Y, batch_size=GLOBAL_BATCH, epochs=2, shuffle=False, verbose=0)
    reference = make_model()
    reference.compile(optimizer=tfopt.Momentum(0.05, momentum=0.9).as_keras(), loss="mse")
    reference.fit(X, Y, batch_size=GLOBAL_BATCH, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(model.trainable_variables, reference.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
