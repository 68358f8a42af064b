"""The contract every tfopt optimizer keeps, driven by one registry.

Adding an optimizer to ``OPTIMIZERS`` runs all of these tests on it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfopt

OPTIMIZERS = {
    "gradient_descent": lambda **kw: tfopt.GradientDescent(**kw),
    "momentum": lambda **kw: tfopt.Momentum(momentum=0.7, **kw),
    "nesterov": lambda **kw: tfopt.Momentum(momentum=0.7, nesterov=True, **kw),
    "adam": lambda **kw: tfopt.Adam(**kw),
    # the other path of each (tfopt.kernels.fused): the plain-ops reference, or Adam's fused kernel
    "gradient_descent_reference": lambda **kw: tfopt.GradientDescent(fused=False, **kw),
    "nesterov_reference": lambda **kw: tfopt.Momentum(momentum=0.7, nesterov=True, fused=False, **kw),
    "adam_fused": lambda **kw: tfopt.Adam(fused=True, **kw),
}
SLOTS = {"gradient_descent": (), "momentum": ("velocity",), "nesterov": ("velocity",), "adam": ("m", "v"),
         "gradient_descent_reference": (), "nesterov_reference": ("velocity",), "adam_fused": ("m", "v")}

each_optimizer = pytest.mark.parametrize("name", list(OPTIMIZERS))


def make(name, **kw):
    kw.setdefault("learning_rate", 0.05)
    return OPTIMIZERS[name](**kw)


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(2)])


DATA = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
TARGETS = np.random.default_rng(1).normal(size=(16, 2)).astype("float32")


def train_step(model, opt):
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(DATA) - TARGETS) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def weights(model):
    return [v.numpy() for v in model.trainable_variables]


def state(opt, variables):
    return [int(opt.iterations)] + [
        opt.get_slot(v, s).numpy() for v in variables for s in opt.slot_names if _has_slots(opt, v)
    ]


def _has_slots(opt, variable):
    try:
        opt.get_slot(variable, opt.slot_names[0])
        return True
    except KeyError:
        return False


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------- basics
@each_optimizer
def test_is_module_with_int64_step_counter(name):
    opt = make(name)
    assert isinstance(opt, tf.Module)
    assert opt.iterations.dtype == tf.int64 and int(opt.iterations) == 0
    assert tuple(opt.slot_names) == SLOTS[name]
    x = tf.Variable([1.0, 2.0])
    opt.apply_gradients([tf.constant([0.1, 0.2])], [x])  # tutorial form
    opt.apply_gradients(zip([tf.constant([0.1, 0.2])], [x]))  # Keras form
    assert int(opt.iterations) == 2


@each_optimizer
def test_each_variable_has_its_own_slots(name):
    opt = make(name)
    a, b = tf.Variable([1.0, 2.0, 3.0]), tf.Variable([[1.0], [2.0]], dtype=tf.float64)
    opt.build([a, b])
    for slot_name in opt.slot_names:
        sa, sb = opt.get_slot(a, slot_name), opt.get_slot(b, slot_name)
        assert sa is not sb
        assert sa.shape == a.shape and sa.dtype == a.dtype and not sa.trainable
        assert sb.shape == b.shape and sb.dtype == b.dtype and not sb.trainable
    before = len(opt.variables)
    opt.apply_gradients(zip([tf.ones(3), tf.ones((2, 1), tf.float64)], [a, b]))
    assert len(opt.variables) == before, "slots are created once"


@each_optimizer
def test_two_variables_update_like_two_separate_runs(name):
    """The guide's Momentum shared one state across variables; here each variable is independent."""
    a, b = tf.Variable([1.0, -2.0]), tf.Variable([0.5])
    alone_a, alone_b = tf.Variable([1.0, -2.0]), tf.Variable([0.5])
    both, only_a, only_b = make(name), make(name), make(name)
    for _ in range(4):
        ga, gb = 2 * a.read_value(), 3 * b.read_value()
        both.apply_gradients(zip([ga, gb], [a, b]))
        only_a.apply_gradients(zip([2 * alone_a.read_value()], [alone_a]))
        only_b.apply_gradients(zip([3 * alone_b.read_value()], [alone_b]))
    assert_same([a.numpy(), b.numpy()], [alone_a.numpy(), alone_b.numpy()])


@each_optimizer
def test_slots_created_on_first_apply_inside_tf_function(name):
    model, opt = make_model(), make(name)
    step = tf.function(train_step(model, opt))
    step()
    step()
    assert int(opt.iterations) == 2
    for v in model.trainable_variables:
        for slot_name in opt.slot_names:
            assert opt.get_slot(v, slot_name).shape == v.shape
    if opt.slot_names:
        assert any(np.any(opt.get_slot(v, opt.slot_names[0]).numpy() != 0) for v in model.trainable_variables)


@each_optimizer
def test_keras_variable_and_its_tf_variable_share_slots(name):
    model, opt = make_model(), make(name)
    kernel = model.trainable_variables[0]
    assert not isinstance(kernel, tf.Variable)
    opt.build([kernel])
    for slot_name in opt.slot_names:
        assert opt.get_slot(kernel, slot_name) is opt.get_slot(kernel.value, slot_name)


@each_optimizer
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32, tf.float64])
def test_dtype_is_kept(name, dtype):
    opt = make(name)
    x = tf.Variable(tf.constant([1.0, -2.0, 3.0], dtype))
    for _ in range(3):
        opt.apply_gradients([(tf.constant([0.5, 0.25, -1.0], dtype), x)])
    assert x.dtype == dtype
    assert np.all(np.isfinite(x.numpy().astype(np.float32)))
    assert not np.array_equal(x.numpy().astype(np.float32), [1.0, -2.0, 3.0])
    for slot_name in opt.slot_names:
        assert opt.get_slot(x, slot_name).dtype == dtype


# ------------------------------------------------------------- compilation
@each_optimizer
def test_eager_and_tf_function_agree_bit_for_bit(name):
    eager_model, graph_model = make_model(), make_model()
    eager_opt, graph_opt = make(name), make(name)
    eager_step = train_step(eager_model, eager_opt)
    graph_step = tf.function(train_step(graph_model, graph_opt))
    for _ in range(5):
        eager_step()
        graph_step()
    assert_same(weights(eager_model), weights(graph_model))
    assert_same(
        state(eager_opt, eager_model.trainable_variables), state(graph_opt, graph_model.trainable_variables)
    )


@each_optimizer
def test_xla_agrees_with_eager(name):
    eager_model, xla_model = make_model(), make_model()
    eager_opt, xla_opt = make(name), make(name)
    eager_step = train_step(eager_model, eager_opt)
    xla_step = tf.function(train_step(xla_model, xla_opt), jit_compile=True)
    for _ in range(5):
        eager_step()
        xla_step()
    for a, b in zip(weights(eager_model), weights(xla_model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # XLA may fuse multiply-adds


@each_optimizer
def test_hyperparameter_change_is_honoured_without_retrace(name):
    model, opt = make_model(), make(name)
    ref_model, ref_opt = make_model(), make(name)
    step = tf.function(train_step(model, opt))
    ref_step = train_step(ref_model, ref_opt)
    step()
    ref_step()
    traces = step.experimental_get_tracing_count()
    new_values = {"learning_rate": 0.2, "momentum": 0.3, "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3}
    for key, value in new_values.items():
        if hasattr(opt, key):
            setattr(opt, key, value)
            setattr(ref_opt, key, value)
    step()
    ref_step()
    assert step.experimental_get_tracing_count() == traces
    assert_same(weights(model), weights(ref_model))
    assert float(opt.learning_rate) == 0.2


# ----------------------------------------------------------- learning rates
@each_optimizer
@pytest.mark.parametrize("kind", ["variable", "callable", "keras_schedule"])
def test_learning_rate_kinds_equal_the_float_per_step(name, kind):
    rates = [0.1 * 0.5**k for k in range(4)]
    if kind == "variable":
        lr = tf.Variable(rates[0], dtype=tf.float64)
    elif kind == "callable":
        lr = lambda step: 0.1 * 0.5 ** tf.cast(step, tf.float64)  # noqa: E731
    else:
        lr = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    opt, ref = make(name, learning_rate=lr), make(name, learning_rate=rates[0])
    x, y = tf.Variable([1.0, -0.5], tf.float64), tf.Variable([1.0, -0.5], tf.float64)
    for rate in rates:
        if kind == "variable":
            lr.assign(rate)
        ref.learning_rate = rate
        opt.apply_gradients([(2 * x.read_value(), x)])
        ref.apply_gradients([(2 * y.read_value(), y)])
        if kind == "keras_schedule":  # a float32 schedule: equal to float32 precision
            np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-7)
        else:
            np.testing.assert_array_equal(x.numpy(), y.numpy())


@each_optimizer
def test_schedule_returning_negative_rate_raises_before_any_change(name):
    opt = make(name, learning_rate=lambda step: -1.0 + 0 * tf.cast(step, tf.float32))
    x = tf.Variable([1.0, 2.0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="learning_rate"):
        opt.apply_gradients([(tf.ones(2), x)])
    assert_same([x.numpy()], [np.array([1.0, 2.0], np.float32)])
    assert int(opt.iterations) == 0


# ---------------------------------------------------------------- clipping
@each_optimizer
@pytest.mark.parametrize("clip", ["clipnorm", "clipvalue", "global_clipnorm"])
def test_clipping_equals_stepping_on_clipped_gradients(name, clip):
    grads = [tf.constant([3.0, -4.0]), tf.constant([[0.5, 2.0]])]
    if clip == "clipnorm":
        clipped = [tf.clip_by_norm(g, 1.0) for g in grads]
    elif clip == "clipvalue":
        clipped = [tf.clip_by_value(g, -1.0, 1.0) for g in grads]
    else:
        clipped, _ = tf.clip_by_global_norm(grads, 1.0)
    a = [tf.Variable([1.0, 1.0]), tf.Variable([[1.0, 1.0]])]
    b = [tf.Variable([1.0, 1.0]), tf.Variable([[1.0, 1.0]])]
    make(name, **{clip: 1.0}).apply_gradients(zip(grads, a))
    make(name).apply_gradients(zip(clipped, b))
    assert_same([v.numpy() for v in a], [v.numpy() for v in b])


# ------------------------------------------------------------- checkpoints
@each_optimizer
@pytest.mark.parametrize("build_first", [False, True], ids=["restore_before_first_step", "built_then_restored"])
def test_checkpoint_resume_is_identical(name, build_first, tmp_path):
    model, opt = make_model(), make(name)
    step = tf.function(train_step(model, opt))
    for _ in range(3):
        step()
    path = tf.train.Checkpoint(model=model, optimizer=opt).write(str(tmp_path / "ckpt"))
    for _ in range(3):
        step()

    fresh_model, fresh_opt = make_model(seed=7), make(name, learning_rate=0.9)
    if build_first:
        fresh_opt.build(fresh_model.trainable_variables)
    status = tf.train.Checkpoint(model=fresh_model, optimizer=fresh_opt).read(path)
    fresh_step = tf.function(train_step(fresh_model, fresh_opt))
    for _ in range(3):
        fresh_step()
    status.assert_consumed()
    assert int(fresh_opt.iterations) == 6
    assert_same(weights(model), weights(fresh_model))
    assert_same(state(opt, model.trainable_variables), state(fresh_opt, fresh_model.trainable_variables))


# ------------------------------------------------------- sparse and missing
@each_optimizer
def test_indexed_slices_equal_dense_gradient(name):
    """Duplicate indices are summed; x and every slot equal the dense run bit for bit, step by step."""
    rng = np.random.default_rng(1)
    table = rng.normal(size=(9, 3)).astype(np.float32)
    sparse_var, dense_var = tf.Variable(table), tf.Variable(table)
    sparse_opt, dense_opt = make(name), make(name)
    for ids in ([1, 4, 1, 7, 1], [2, 2, 8], [4, 0, 4, 4]):
        weights = tf.constant(rng.normal(size=(len(ids), 3)).astype(np.float32))
        grads = []
        for var in (sparse_var, dense_var):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(weights * tf.gather(var, ids))
            grads.append(tape.gradient(loss, var))
        assert isinstance(grads[0], tf.IndexedSlices)
        sparse_opt.apply_gradients([(grads[0], sparse_var)])
        dense_opt.apply_gradients([(tf.convert_to_tensor(grads[1]), dense_var)])
        np.testing.assert_array_equal(sparse_var.numpy(), dense_var.numpy())
        for slot_name in sparse_opt.slot_names:
            np.testing.assert_array_equal(
                sparse_opt.get_slot(sparse_var, slot_name).numpy(), dense_opt.get_slot(dense_var, slot_name).numpy()
            )
    np.testing.assert_array_equal(sparse_var.numpy()[[3, 5, 6]], table[[3, 5, 6]])  # never touched


@each_optimizer
def test_none_gradient_is_skipped_with_one_warning_naming_it(name):
    model, opt = make_model(), make(name)
    variables = model.trainable_variables
    grads = [tf.ones_like(v) for v in variables]
    grads[1] = None
    before = weights(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.apply_gradients(zip(grads, variables))
    messages = [str(w.message) for w in caught if "Gradients do not exist" in str(w.message)]
    assert len(messages) == 1 and variables[1].path in messages[0]
    np.testing.assert_array_equal(variables[1].numpy(), before[1])
    assert not np.array_equal(variables[0].numpy(), before[0])


@each_optimizer
def test_all_none_gradients_raise(name):
    x = tf.Variable([1.0])
    with pytest.raises(ValueError, match="No gradients"):
        make(name).apply_gradients([(None, x)])


# --------------------------------------------------------------- bad input
def _bad_calls():
    a, b = tf.Variable([1.0, 2.0], name="a"), tf.Variable([[3.0]], name="b")
    g = tf.constant([0.5, 0.5])
    return {
        "unequal_lengths": (([g, tf.ones((1, 1))], [a, b, tf.Variable(1.0)]), "3 variables"),
        "wrong_shape": ((zip([g, tf.ones((2, 2))], [a, b]),), "shape"),
        "not_a_variable": ((zip([g, g], [a, tf.constant([1.0, 2.0])]),), "not a variable"),
        "variable_twice": ((zip([g, g], [a, a]),), "more than once"),
        "not_pairs": (([g, a],), "pair"),
    }, (a, b)


@each_optimizer
@pytest.mark.parametrize("case", list(_bad_calls()[0]))
def test_bad_call_raises_before_anything_changes(name, case):
    calls, (a, b) = _bad_calls()
    opt = make(name)
    opt.build([a, b])
    opt.apply_gradients(zip([tf.ones(2), tf.ones((1, 1))], [a, b]))
    before = [a.numpy(), b.numpy()] + [v.numpy() for v in opt.variables]
    args, match = calls[case]
    with pytest.raises((ValueError, TypeError), match=match):
        opt.apply_gradients(*args)
    assert_same(before, [a.numpy(), b.numpy()] + [v.numpy() for v in opt.variables])


@each_optimizer
@pytest.mark.parametrize("value", [-0.1, float("nan"), "fast"])
def test_bad_learning_rate_raises(name, value):
    with pytest.raises((ValueError, TypeError), match="learning_rate"):
        make(name, learning_rate=value)
    opt = make(name)
    with pytest.raises((ValueError, TypeError), match="learning_rate"):
        opt.learning_rate = value
    assert float(opt.learning_rate) == 0.05


@pytest.mark.parametrize(
    "factory, key, value",
    [
        (tfopt.Momentum, "momentum", 1.0),
        (tfopt.Momentum, "momentum", -0.1),
        (tfopt.Adam, "beta_1", 1.0),
        (tfopt.Adam, "beta_2", -0.5),
        (tfopt.Adam, "beta_2", float("nan")),
        (tfopt.Adam, "epsilon", -1e-8),
    ],
)
def test_bad_hyperparameter_raises_naming_it(factory, key, value):
    with pytest.raises(ValueError, match=key):
        factory(**{key: value})
    opt = factory()
    old = float(getattr(opt, key))
    with pytest.raises(ValueError, match=key):
        setattr(opt, key, value)
    assert float(getattr(opt, key)) == old


@each_optimizer
def test_config_round_trip(name):
    opt = make(name, clipnorm=2.0)
    config = opt.get_config()
    clone = type(opt).from_config(config)
    assert clone.get_config() == config
    assert int(clone.iterations) == 0


@each_optimizer
def test_get_slot_errors_name_the_problem(name):
    opt = make(name)
    x = tf.Variable([1.0], name="never_seen")
    with pytest.raises(KeyError, match="no slot 'nope'"):
        opt.get_slot(x, "nope")
    if opt.slot_names:
        with pytest.raises(KeyError, match="never_seen"):
            opt.get_slot(x, opt.slot_names[0])
