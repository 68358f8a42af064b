"""tfopt.chain and tfopt.transforms: each transform against NumPy, chains against the built-ins, and the
optimizer contract (slots, no retrace, checkpoints, config, tf.function/XLA, half precision, sparse,
tf.distribute, convergence_test) for chains."""

import json
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfopt
from tfopt.core import transforms as T


# ------------------------------------------------------------ user transforms
class ScaleByRss(T.Transform):
    """Adagrad's direction: s <- s + u^2;  out = u / (sqrt(s) + eps)."""

    slot_names = ("sum",)
    epsilon = tfopt.Hyperparameter(1e-7, check=tfopt.checks.non_negative)

    def update(self, u, slots, *, epsilon, **_):
        s = slots["sum"] + tf.square(u)
        return u / (tf.sqrt(s) + epsilon), {"sum": s}


class NormalizeByGlobalMax(T.Transform):
    """out = u / (max over every variable of |u|) * gain^t: a reduction, a step value and an option."""

    gain = tfopt.Hyperparameter(1.0, check=tfopt.checks.positive)
    use_gain = tfopt.Option(True, check=tfopt.checks.boolean)

    def step_values(self, *, step, gain, **_):
        return {"gain_t": gain**step}

    def reduce(self, inputs, **_):
        return {"largest": tf.reduce_max(tf.stack([tf.cast(tf.reduce_max(tf.abs(u)), tf.float64) for u in inputs]))}

    def update(self, u, slots, *, largest, gain_t, **_):
        return u / largest * (gain_t if self.use_gain else 1), {}


# ------------------------------------------------------ NumPy float64 references
# Each takes (inputs of every variable, the variables' values, t) and returns the outputs; state in a closure.
def np_scale_by_adam(b1=0.9, b2=0.999, eps=1e-7):
    m, v = {}, {}

    def f(us, xs, t):
        out = []
        for i, u in enumerate(us):
            m[i] = b1 * m.get(i, 0) + (1 - b1) * u
            v[i] = b2 * v.get(i, 0) + (1 - b2) * u * u
            out.append((m[i] / (1 - b1**t)) / (np.sqrt(v[i] / (1 - b2**t)) + eps))
        return out
    return f


def np_scale_by_rms(rho=0.9, eps=1e-7):
    v = {}

    def f(us, xs, t):
        for i, u in enumerate(us):
            v[i] = rho * v.get(i, 0) + (1 - rho) * u * u
        return [u / (np.sqrt(v[i]) + eps) for i, u in enumerate(us)]
    return f


def np_trace(decay=0.9, nesterov=False):
    tr = {}

    def f(us, xs, t):
        for i, u in enumerate(us):
            tr[i] = decay * tr.get(i, 0) + u
        return [u + decay * tr[i] if nesterov else tr[i] for i, u in enumerate(us)]
    return f


def np_stateless(fn):
    return lambda us, xs, t: [fn(u, x) for u, x in zip(us, xs)]


def np_clip_by_global_norm(max_norm):
    def f(us, xs, t):
        norm = np.sqrt(sum(np.sum(u * u) for u in us))
        return [u * min(1.0, max_norm / norm) for u in us]
    return f


def np_rss(eps=1e-7):
    s = {}

    def f(us, xs, t):
        for i, u in enumerate(us):
            s[i] = s.get(i, 0) + u * u
        return [u / (np.sqrt(s[i]) + eps) for i, u in enumerate(us)]
    return f


def np_normalize(gain):
    return lambda us, xs, t: [u / max(np.max(np.abs(u)) for u in us) * gain**t for u in us]


def numpy_chain(parts, x0, grads):
    xs = [np.array(x, np.float64) for x in x0]
    for t, gs in enumerate(grads, start=1):
        us = [np.array(g, np.float64) for g in gs]
        for part in parts:
            us = part(us, xs, t)
        xs = [x - u for x, u in zip(xs, us)]
    return xs


RNG = np.random.default_rng(0)
X0 = [RNG.normal(size=3), RNG.normal(size=(2, 2)), RNG.normal(size=())]
GRADS = [[RNG.normal(size=np.shape(x)) for x in X0] for _ in range(8)]

CASES = {  # id: (transforms, NumPy reference)
    "scale_by_adam": (lambda: [T.scale_by_adam(0.8, 0.99, 1e-3)], lambda: [np_scale_by_adam(0.8, 0.99, 1e-3)]),
    "scale_by_rms": (lambda: [T.scale_by_rms(rho=0.7, epsilon=1e-3)], lambda: [np_scale_by_rms(0.7, 1e-3)]),
    "trace": (lambda: [T.trace(0.6)], lambda: [np_trace(0.6)]),
    "trace_nesterov": (lambda: [T.trace(0.6, nesterov=True)], lambda: [np_trace(0.6, nesterov=True)]),
    "scale_by_sign": (lambda: [T.scale_by_sign()], lambda: [np_stateless(lambda u, x: np.sign(u))]),
    "scale": (lambda: [T.scale(-0.3)], lambda: [np_stateless(lambda u, x: -0.3 * u)]),
    "clip": (lambda: [T.clip(0.5)], lambda: [np_stateless(lambda u, x: np.clip(u, -0.5, 0.5))]),
    "add_decayed_weights": (lambda: [T.add_decayed_weights(0.1)], lambda: [np_stateless(lambda u, x: u + 0.1 * x)]),
    "clip_by_global_norm": (lambda: [T.clip_by_global_norm(1.5)], lambda: [np_clip_by_global_norm(1.5)]),
    "scale_by_learning_rate": (lambda: [T.scale_by_learning_rate(0.05)],
                               lambda: [np_stateless(lambda u, x: 0.05 * u)]),
    "adamw": (lambda: [T.clip_by_global_norm(1.0), T.scale_by_adam(), T.add_decayed_weights(1e-2),
                       T.scale_by_learning_rate(0.1)],
              lambda: [np_clip_by_global_norm(1.0), np_scale_by_adam(), np_stateless(lambda u, x: u + 1e-2 * x),
                       np_stateless(lambda u, x: 0.1 * u)]),
    # a reduction after a transform with slots: its input is the Adam direction of every variable
    "global_norm_of_adam_direction": (lambda: [T.scale_by_adam(), T.clip_by_global_norm(0.5), T.trace(0.5)],
                                      lambda: [np_scale_by_adam(), np_clip_by_global_norm(0.5), np_trace(0.5)]),
    "user_transforms": (lambda: [NormalizeByGlobalMax(gain=0.9), ScaleByRss(1e-3), T.scale(0.2)],
                        lambda: [np_normalize(0.9), np_rss(1e-3), np_stateless(lambda u, x: 0.2 * u)]),
}


def run(opt, x0, grads, dtype=tf.float64, compiled=False, jit=False):
    xs = [tf.Variable(np.asarray(x), dtype=dtype) for x in x0]
    apply = opt.apply_gradients
    if compiled:
        apply = tf.function(lambda gs: opt.apply_gradients(zip(gs, xs)), jit_compile=jit)
    for gs in grads:
        gs = [tf.constant(g, dtype) for g in gs]
        apply(gs) if compiled else apply(zip(gs, xs))
    return xs


def assert_bitwise(got, want):
    for a, b in zip(got, want):
        a, b = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b))
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("case", list(CASES))
def test_matches_numpy_float64(case):
    """Every transform, in float64, against its formula in NumPy over several variables: rtol 1e-12."""
    transforms, reference = CASES[case]
    xs = run(tfopt.chain(*transforms()), X0, GRADS)
    for got, want in zip(xs, numpy_chain(reference(), X0, GRADS)):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------- vs built-ins
@pytest.mark.parametrize("fused", [False, None], ids=["plain_ops", "default"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_adam_is_scale_by_adam_then_learning_rate_bit_for_bit(fused, compiled):
    """scale_by_adam runs adam_update with a learning rate of 1 (exact): Adam's numbers and slots, bit for bit."""
    grads32 = [[g.astype(np.float32) for g in gs] for gs in GRADS]
    chain = tfopt.chain(T.scale_by_adam(0.9, 0.99, 1e-3), T.scale_by_learning_rate(0.05))
    adam = tfopt.Adam(0.05, beta_1=0.9, beta_2=0.99, epsilon=1e-3, fused=fused)
    got = run(chain, X0, grads32, tf.float32, compiled)
    want = run(adam, X0, grads32, tf.float32, compiled)
    assert_bitwise([x.numpy() for x in got], [x.numpy() for x in want])
    for a, b in zip(got, want):
        assert_bitwise([chain.get_slot(a, "scale_by_adam_m").numpy(), chain.get_slot(a, "scale_by_adam_v").numpy()],
                       [adam.get_slot(b, "m").numpy(), adam.get_slot(b, "v").numpy()])


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_clip_by_global_norm_equals_the_base_global_clipnorm(compiled):
    """Against GradientDescent(global_clipnorm=...) (tf.clip_by_global_norm, float32): rtol 1e-6."""
    grads32 = [[3 * g.astype(np.float32) for g in gs] for gs in GRADS]
    got = run(tfopt.chain(T.clip_by_global_norm(1.0), T.scale_by_learning_rate(0.1)), X0, grads32, tf.float32,
              compiled)
    want = run(tfopt.GradientDescent(0.1, global_clipnorm=1.0, fused=False), X0, grads32, tf.float32, compiled)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_clip_by_global_norm_takes_variables_of_different_dtypes_in_one_call():
    """Each variable's sum of squares in its compute dtype, summed in float64: here ||(3, 0, 4, 0)|| = 5."""
    a, b, c = tf.Variable([1.0, 2.0]), tf.Variable([1.0], dtype=tf.float64), tf.Variable([1.0], dtype=tf.float16)
    opt = tfopt.chain(T.clip_by_global_norm(1.0), T.scale_by_learning_rate(1.0))
    opt.apply_gradients([(tf.constant([3.0, 0.0]), a), (tf.constant([4.0], tf.float64), b),
                         (tf.constant([0.0], tf.float16), c)])
    np.testing.assert_allclose(a.numpy(), [1 - 0.6, 2.0], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), [1 - 0.8], rtol=1e-12)


def test_base_clipping_options_clip_the_gradient_first():
    chain = lambda **kw: tfopt.chain(T.scale_by_adam(), T.scale_by_learning_rate(0.1), **kw)  # noqa: E731
    clipped = [[np.clip(g, -0.2, 0.2) for g in gs] for gs in GRADS]
    assert_bitwise([x.numpy() for x in run(chain(clipvalue=0.2), X0, GRADS)],
                   [x.numpy() for x in run(chain(), X0, clipped)])


# ------------------------------------------------------------ the optimizer
def adamw(learning_rate=0.1, **kw):
    return tfopt.chain(T.clip_by_global_norm(1.0), T.scale_by_adam(), T.add_decayed_weights(1e-2),
                       T.scale_by_learning_rate(learning_rate), **kw)


def test_slot_names_are_prefixed_and_unique_and_get_slot_finds_them():
    chain = tfopt.chain(T.trace(0.5), T.scale_by_adam(), T.trace(0.9, name="slow"), T.trace(0.1), T.scale(2.0))
    assert chain.slot_names == ("trace_trace", "scale_by_adam_m", "scale_by_adam_v", "slow_trace", "trace_1_trace")
    x = tf.Variable([1.0, 2.0])
    chain.apply_gradients([(tf.constant([1.0, -1.0]), x)])
    np.testing.assert_array_equal(chain.get_slot(x, "trace_trace").numpy(), [1.0, -1.0])
    assert chain.get_slot(x, "scale_by_adam_v").shape == x.shape
    with pytest.raises(KeyError, match="no slot 'm'"):
        chain.get_slot(x, "m")
    assert isinstance(chain, tfopt.Optimizer) and isinstance(chain, tf.Module)


def test_learning_rate_reads_and_writes_the_learning_rate_transform():
    chain = adamw(0.1)
    assert float(chain.learning_rate) == 0.1 and chain.learning_rate is chain.transforms[-1].learning_rate
    chain.learning_rate = 0.02
    assert float(chain.transforms[-1].learning_rate) == 0.02 and chain.get_config()["learning_rate"] == 0.02
    with pytest.raises(ValueError, match="Invalid learning_rate"):
        chain.learning_rate = -1.0
    no_rate = tfopt.chain(T.scale_by_sign())
    with pytest.raises(AttributeError, match="no learning rate"):
        no_rate.learning_rate  # noqa: B018
    assert "learning_rate" not in no_rate.get_config()


def test_a_schedule_as_learning_rate_equals_the_float_per_step():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    x, y = tf.Variable([1.0, 2.0]), tf.Variable([1.0, 2.0])
    scheduled, manual = adamw(schedule), adamw(0.1)
    step = tf.function(lambda: scheduled.apply_gradients([(tf.constant([0.3, -0.4]), x)]))
    for t in range(4):
        step()
        manual.learning_rate = float(schedule(t))
        manual.apply_gradients([(tf.constant([0.3, -0.4]), y)])
    np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-6)


def test_a_hyperparameter_change_reaches_a_traced_step_without_retracing():
    """The traced step equals an eager one with the same changes, and differs from one without them."""
    traced, eager, unchanged = adamw(), adamw(), adamw()
    x, y, z = (tf.Variable([1.0, -2.0]) for _ in range(3))
    step = tf.function(lambda: traced.apply_gradients([(tf.constant([0.5, 0.25]), x)]))
    step()
    for opt, var in ((eager, y), (unchanged, z)):
        opt.apply_gradients([(tf.constant([0.5, 0.25]), var)])
    traces = step.experimental_get_tracing_count()
    for opt in (traced, eager):
        opt.transforms[1].beta_1 = 0.0
        opt.transforms[0].max_norm = 0.1
        opt.learning_rate = 0.5
    step()
    for opt, var in ((eager, y), (unchanged, z)):
        opt.apply_gradients([(tf.constant([0.5, 0.25]), var)])
    assert step.experimental_get_tracing_count() == traces
    assert_bitwise([x.numpy()], [y.numpy()])
    assert not np.allclose(x.numpy(), z.numpy(), rtol=1e-3)


def test_eager_equals_tf_function_bit_for_bit_and_xla_runs():
    grads32 = [[g.astype(np.float32) for g in gs] for gs in GRADS]
    make = lambda: tfopt.chain(T.scale_by_adam(), T.clip_by_global_norm(0.5), T.trace(0.5),  # noqa: E731
                               T.add_decayed_weights(1e-2), T.scale_by_learning_rate(0.1))
    eager = run(make(), X0, grads32, tf.float32)
    assert_bitwise([x.numpy() for x in run(make(), X0, grads32, tf.float32, compiled=True)],
                   [x.numpy() for x in eager])
    xla = run(make(), X0, grads32, tf.float32, compiled=True, jit=True)
    for a, b in zip(xla, eager):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_keeps_dtypes_and_follows_float32(dtype):
    x0 = [np.asarray(x, np.float32) for x in X0]
    rounded = [tf.cast(tf.cast(x, dtype), tf.float32).numpy() for x in x0]
    grads = [[tf.cast(tf.cast(g, dtype), tf.float32).numpy() for g in gs] for gs in GRADS[:3]]
    chain = adamw(0.01)
    half = run(chain, rounded, grads, dtype)
    full = run(adamw(0.01), rounded, grads, tf.float32)
    for h, f in zip(half, full):
        assert h.dtype == dtype and all(chain.get_slot(h, n).dtype == dtype for n in chain.slot_names)
        np.testing.assert_allclose(tf.cast(h, tf.float32).numpy(), f.numpy(), rtol=2e-2, atol=2e-2)


def test_indexed_slices_equal_the_dense_gradient():
    """Densified: x and every slot equal the dense run bit for bit (global norm included)."""
    rng = np.random.default_rng(1)
    table = rng.normal(size=(9, 3)).astype(np.float32)
    other = tf.constant(rng.normal(size=4).astype(np.float32))
    sparse_var, dense_var = tf.Variable(table), tf.Variable(table)
    sparse_b, dense_b = tf.Variable(tf.zeros(4)), tf.Variable(tf.zeros(4))
    sparse_opt, dense_opt = adamw(), adamw()
    for ids in ([1, 4, 1, 7, 1], [2, 2, 8], [4, 0, 4, 4]):
        weights = tf.constant(rng.normal(size=(len(ids), 3)).astype(np.float32))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(weights * tf.gather(sparse_var, ids))
        grad = tape.gradient(loss, sparse_var)
        assert isinstance(grad, tf.IndexedSlices)
        sparse_opt.apply_gradients([(grad, sparse_var), (other, sparse_b)])
        dense_opt.apply_gradients([(tf.convert_to_tensor(grad), dense_var), (other, dense_b)])
    assert_bitwise([sparse_var.numpy(), sparse_b.numpy()], [dense_var.numpy(), dense_b.numpy()])
    for name in sparse_opt.slot_names:
        assert_bitwise([sparse_opt.get_slot(sparse_var, name).numpy()], [dense_opt.get_slot(dense_var, name).numpy()])


def test_none_gradients_are_skipped_with_a_warning():
    x, y = tf.Variable([1.0]), tf.Variable([2.0])
    chain = adamw()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chain.apply_gradients([(tf.constant([5.0]), x), (None, y)])
    assert any("Gradients do not exist" in str(w.message) for w in caught)
    assert float(y.numpy()[0]) == 2.0 and float(x.numpy()[0]) != 1.0


# ------------------------------------------------------- checkpoints, config
def test_checkpoint_resume_equals_never_stopping(tmp_path):
    """Slots, the step and the transforms' hyperparameter variables are saved; resuming is bit for bit."""
    def grads(i):
        return [tf.constant(GRADS[i][0], tf.float32), tf.constant(GRADS[i][1], tf.float32)]

    xs, opt = [tf.Variable(np.float32(x)) for x in X0[:2]], adamw()
    opt.transforms[1].beta_1 = 0.8  # not the default: restored from the checkpoint
    step = tf.function(lambda gs: opt.apply_gradients(zip(gs, xs)))
    for i in range(3):
        step(grads(i))
    path = tf.train.Checkpoint(x=xs, optimizer=opt).write(str(tmp_path / "ckpt"))
    for i in range(3, 6):
        step(grads(i))

    fresh_xs, fresh = [tf.Variable(tf.zeros_like(x)) for x in xs], adamw()
    status = tf.train.Checkpoint(x=fresh_xs, optimizer=fresh).read(path)
    fresh_step = tf.function(lambda gs: fresh.apply_gradients(zip(gs, fresh_xs)))
    for i in range(3, 6):
        fresh_step(grads(i))
    status.assert_consumed()
    assert int(fresh.iterations) == 6 and float(fresh.transforms[1].beta_1) == 0.8
    assert_bitwise([x.numpy() for x in fresh_xs], [x.numpy() for x in xs])
    for a, b in zip(fresh_xs, xs):
        assert_bitwise([fresh.get_slot(a, n).numpy() for n in opt.slot_names],
                       [opt.get_slot(b, n).numpy() for n in opt.slot_names])


def test_config_is_json_and_round_trips_with_user_transforms():
    chain = tfopt.chain(NormalizeByGlobalMax(gain=0.95, use_gain=False), ScaleByRss(1e-4), T.trace(0.5, nesterov=True),
                        T.scale_by_learning_rate(0.03), clipvalue=1.0, name="mine")
    config = json.loads(json.dumps(chain.get_config()))
    assert config["transforms"][0] == {"class": "test_transforms:NormalizeByGlobalMax",
                                       "config": {"name": "normalize_by_global_max", "gain": 0.95, "use_gain": False}}
    assert config["learning_rate"] == 0.03 and config["clipvalue"] == 1.0
    again = tfopt.Chain.from_config(config)
    assert again.get_config() == chain.get_config() and again.slot_names == chain.slot_names
    assert_bitwise([x.numpy() for x in run(again, X0, GRADS)], [x.numpy() for x in run(chain, X0, GRADS)])
    assert float(tfopt.Chain.from_config({**config, "learning_rate": 0.5}).learning_rate) == 0.5


def test_bad_chains_and_transforms_say_what_is_wrong():
    with pytest.raises(ValueError, match="at least one transform"):
        tfopt.chain()
    with pytest.raises(TypeError, match="a class: call it"):
        tfopt.chain(T.scale_by_adam)
    with pytest.raises(ValueError, match="Invalid rho"):
        T.scale_by_rms(rho=1.0)
    with pytest.raises(TypeError, match="missing required argument 'factor'"):
        T.scale()
    with pytest.raises(TypeError, match="unexpected keyword argument 'fator'; its arguments are factor, name"):
        T.scale(fator=2.0)
    with pytest.raises(ValueError, match="Invalid max_norm"):
        T.clip_by_global_norm(0.0)
    with pytest.raises(ValueError, match="Cannot find the transform 'nowhere:Thing'"):
        tfopt.Chain.from_config({"transforms": [{"class": "nowhere:Thing", "config": {}}]})
    with pytest.raises(ValueError, match="not a tfopt.transforms.Transform"):
        tfopt.Chain.from_config({"transforms": [{"class": "tfopt:Adam", "config": {}}]})
    with pytest.raises(AttributeError, match="no learning rate"):
        tfopt.Chain.from_config({"transforms": [{"class": "tfopt.core.transforms:ScaleBySign"}], "learning_rate": 0.1})


def test_exports():
    assert {"chain", "Chain", "transforms"} <= set(tfopt.__all__)
    assert tfopt.transforms.scale_by_adam is tfopt.transforms.ScaleByAdam and callable(tfopt.chain)
    assert isinstance(tfopt.chain(T.scale(1.0)), tfopt.Chain)


# --------------------------------------------------------------- harness
def test_convergence_test_runs_a_chain_like_its_builtin():
    chain = tfopt.chain(T.scale_by_adam(), T.scale_by_learning_rate(0.3))
    got = tfopt.convergence_test(chain, tfopt.problems.quartic, init=2.0)
    want = tfopt.convergence_test(tfopt.Adam(0.3, fused=False), tfopt.problems.quartic, init=2.0)
    assert got.status == want.status == "converged" and got.iterations == want.iterations
    np.testing.assert_array_equal(got.path, want.path)
    np.testing.assert_allclose(got.x_final, [-9 / 8], atol=1e-4)
    rows = tfopt.convergence_test(chain, tfopt.problems.quartic, init=2.0, max_iters=50, learning_rate=[0.05, 0.1])
    one = tfopt.convergence_test(chain, tfopt.problems.quartic, init=2.0, max_iters=50, learning_rate=0.05)
    np.testing.assert_array_equal(rows[0].path, one.path)


# ----------------------------------------------------------- tf.distribute
@pytest.fixture(scope="module")
def strategy(mirrored_strategy):
    return mirrored_strategy


DIST_X = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
DIST_Y = np.random.default_rng(1).normal(size=(16, 2)).astype("float32")


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(2)])


def _train(factory, strategy=None):
    scope = strategy.scope() if strategy else tf.init_scope()
    with scope:
        model, opt = _model(), factory()

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((model(x) - y) ** 2) / 8  # per example, over the global batch
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return tf.linalg.global_norm(grads)

    @tf.function
    def step(x, y):
        return strategy.run(replica_step, args=(x, y)) if strategy else replica_step(x, y)

    data = tf.data.Dataset.from_tensor_slices((DIST_X, DIST_Y)).batch(8)
    norms = []
    for x, y in strategy.experimental_distribute_dataset(data) if strategy else data:
        norms.append(step(x, y))
    return [v.numpy() for v in model.trainable_variables], opt, norms


@pytest.mark.parametrize("factory", [
    lambda: tfopt.chain(T.clip_by_global_norm(0.1), T.scale_by_adam(), T.add_decayed_weights(1e-2),
                        T.scale_by_learning_rate(0.05)),
    lambda: tfopt.chain(T.scale_by_adam(), T.clip_by_global_norm(1.0), T.trace(0.5), T.scale_by_learning_rate(0.05)),
], ids=["clip_first", "clip_after_adam"])
def test_two_replicas_equal_one_device_global_norm_included(strategy, factory):
    """The global norm is over the all-reduced gradients: two replicas take the single device's steps."""
    one, _, norms = _train(factory)
    assert all(float(n) > 0.1 for n in norms)  # clip_by_global_norm(0.1) clips every step
    two, opt, _ = _train(factory, strategy)
    assert int(opt.iterations.numpy()) == 2
    slot = opt.get_slot(opt._registry.variables[0], "scale_by_adam_m")
    assert isinstance(slot, tf.distribute.DistributedValues)
    for a, b in zip(two, one):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # the all-reduce sums in another order
