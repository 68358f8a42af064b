"""The rule compiler (``tfopt.kernels.compiler``) against the plain-ops reference (``fused=False``), bit for bit.

Every rule the compiler accepts (the library's, users', chains) must give the plain ops' numbers, slots
included, on float32 and float64 (and half precision, stepped in float32), eagerly and in a ``tf.function``;
every rule it declines must say why and still step (on the plain ops). All rules are built up front in one
library (``compiler.prepare``), so the compiler runs once for the module.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
import user_rules
from rules import assert_bitwise_equal

import tfopt
from tfopt import transforms
from tfopt.kernels import compiler, native


class CompiledAdam(tfopt.Adam):
    """Adam's own update, declared again: no hand-written op, so the compiler's."""

    update = tfopt.Adam.update


class CompiledMomentum(tfopt.Momentum):
    update = tfopt.Momentum.update


def adamw_chain(**kw):
    return tfopt.chain(transforms.scale_by_adam(), transforms.add_decayed_weights(0.01),
                       transforms.scale_by_learning_rate(kw.get("learning_rate", 0.05)))


ACCEPTED = {
    "RMSprop": lambda: tfopt.RMSprop(0.05),
    "RMSprop(centered, momentum)": lambda: tfopt.RMSprop(0.05, momentum=0.5, centered=True),
    "Adagrad": lambda: tfopt.Adagrad(0.05),
    "Adadelta": lambda: tfopt.Adadelta(0.5),
    "Adamax": lambda: tfopt.Adamax(0.05),
    "Nadam": lambda: tfopt.Nadam(0.05),
    "AdamW": lambda: tfopt.AdamW(0.05),
    "Lion": lambda: tfopt.Lion(0.05),
    "RectifiedAdam": lambda: tfopt.RectifiedAdam(0.05),
    "RectifiedAdam(amsgrad)": lambda: tfopt.RectifiedAdam(0.05, amsgrad=True, sma_threshold=0.0),
    "Yogi": lambda: tfopt.Yogi(0.05, l1_regularization_strength=0.01, l2_regularization_strength=0.01),
    "compiled Adam": lambda: CompiledAdam(0.05, epsilon=1e-3),
    "compiled Nesterov": lambda: CompiledMomentum(0.05, momentum=0.9, nesterov=True),
    "user RMSprop": lambda: user_rules.RMSprop(0.05),
    "user CapturedLearningRate": lambda: user_rules.CapturedLearningRate(0.05),
    "chain AdamW": adamw_chain,
    "chain clip, global norm, trace, sign": lambda: tfopt.chain(
        transforms.clip_by_global_norm(1.0), transforms.clip(0.5), transforms.trace(0.9, nesterov=True),
        transforms.scale_by_rms(), transforms.scale(-1.0), transforms.scale_by_sign(),
        transforms.scale_by_learning_rate(0.05)),
}
DECLINED = {  # rule -> a word of the reason
    "Ftrl": (lambda: tfopt.Ftrl(0.05), "Pow"),
    "Lamb": (lambda: tfopt.Lamb(0.05), "Sum"),
    "Adafactor": (lambda: tfopt.Adafactor(0.05), "slot_shape"),
    "Yogi(tanh)": (lambda: tfopt.Yogi(0.05, activation="tanh"), "Tanh"),
    "user SharedChangeMomentum": (lambda: user_rules.SharedChangeMomentum(0.05), "Python state (change)"),
    "user TensorSlotsAdam": (lambda: user_rules.TensorSlotsAdam(0.05), "Python state (moments, position)"),
    "user NumpyMomentum": (lambda: user_rules.NumpyMomentum(0.05), "cannot be traced"),
    "chain with a transcendental transform": (lambda: tfopt.chain(Softsign(), transforms.scale(0.1)), "Tanh"),
}
SHAPES = [(300_001,), (), (13,), (3, 5)] + [(7,)] * 20


class Softsign(transforms.Transform):
    def update(self, u, slots, **_):
        return tf.tanh(u), {}


def reference(factory):
    opt = factory()
    opt.fused = False  # (chains take no fused= argument)
    return opt


def run(opt, dtype, steps=4, shapes=SHAPES, seed=0, compiled=False, values=None):
    """``steps`` random steps on fresh variables (the learning rate changes after step 2, with no retrace)."""
    rng = np.random.default_rng(seed)
    variables = [tf.Variable(rng.normal(size=s).astype(dtype)) for s in shapes]
    apply = tf.function(opt.apply_gradients) if compiled else opt.apply_gradients
    for step in range(steps):
        if step == 2 and opt._learning_rate_transform() is not None if isinstance(opt, tfopt.Chain) else step == 2:
            opt.learning_rate = 0.02
        grads = values if values is not None else [tf.constant(rng.normal(size=s).astype(dtype)) for s in shapes]
        apply(list(zip(grads, variables)))
    return [v.numpy() for v in variables] + [opt.get_slot(v, s).numpy() for v in variables for s in opt.slot_names]


def step_ops(opt, variables, grads):
    step = tf.function(lambda: opt.apply_gradients(zip(grads, variables)))
    return [op.type for op in step.get_concrete_function().graph.get_operations()]


@pytest.fixture(scope="module", autouse=True)
def rules_are_built():
    if native.load() is None:
        pytest.fail(f"tfopt's native ops are not loaded: {native.diagnostics()['error']}", pytrace=False)
    compiler.prepare([factory() for factory in ACCEPTED.values()])  # one compiler run for the module


# -------------------------------------------------------------------------------------------- accepted
@pytest.mark.parametrize("name", list(ACCEPTED))
def test_accepted_rule_is_one_compiled_op(name):
    opt = ACCEPTED[name]()
    variables = [tf.Variable(tf.ones([3], dtype)) for dtype in (tf.float32, tf.float64, tf.float32)]
    ops = step_ops(opt, variables, [tf.ones_like(v) * 0.5 for v in variables])
    assert ops.count("TfoptApplyRule") == 2  # one per dtype
    assert compiler.explain(opt) is None and compiler.explain(opt, tf.float64) is None


@pytest.mark.parametrize("name", list(ACCEPTED))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_equals_the_reference_bit_for_bit(name, dtype):
    want = run(reference(ACCEPTED[name]), dtype)
    assert_bitwise_equal(run(ACCEPTED[name](), dtype), want)
    assert_bitwise_equal(run(ACCEPTED[name](), dtype, compiled=True), want)


@pytest.mark.parametrize("name", ["Adamax", "Lion", "Yogi", "RectifiedAdam(amsgrad)", "chain clip, global norm, "
                                  "trace, sign"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_special_values(name, dtype):
    """Signed zeros (min/max of +0 and -0 differ between Eigen's vector and scalar paths), huge, tiny,
    subnormal and non-finite values, on variables whose sizes end inside a vector and on one."""
    tiny = np.finfo(dtype).smallest_subnormal
    pattern = [0.0, -0.0, 1e30, -1e-30, 3.0, np.inf, -np.inf, np.nan, tiny, -3 * tiny, -0.0, 0.0, 2.0]
    shapes = [(13,), (16,), (29,), (1,)]
    values = [tf.constant(np.resize(np.array(pattern, dtype), s)) for s in shapes]
    starts = [np.resize(np.array([1.0, -1.0, 0.0, -0.0, 2.0, 5.0, 1.0, 0.0, 1e-38, -0.0], dtype), s) for s in shapes]
    results = []
    for opt in (ACCEPTED[name](), reference(ACCEPTED[name])):
        variables = [tf.Variable(x) for x in starts]
        for _ in range(3):
            opt.apply_gradients(zip(values, variables))
        results.append([v.numpy() for v in variables] + [opt.get_slot(v, s).numpy() for v in variables
                                                          for s in opt.slot_names])
    assert_bitwise_equal(*results)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["RMSprop", "chain AdamW"])
def test_half_precision_steps_in_float32_and_rounds_once(name, dtype):
    dtype = tf.as_dtype(dtype)
    rng = np.random.default_rng(1)
    starts = [rng.normal(size=s).astype("float32") for s in [(1001,), (5,)]]
    grads = [tf.cast(rng.normal(size=x.shape).astype("float32"), dtype) for x in starts]
    results = []
    for opt in (ACCEPTED[name](), reference(ACCEPTED[name])):
        variables = [tf.Variable(tf.cast(x, dtype)) for x in starts]
        for _ in range(3):
            opt.apply_gradients(zip(grads, variables))
        results.append([v.numpy().view(np.uint16) for v in variables]
                       + [opt.get_slot(v, s).numpy().view(np.uint16) for v in variables for s in opt.slot_names])
    assert "TfoptApplyRule" in step_ops(ACCEPTED[name](), [tf.Variable(tf.ones([2], dtype))], [tf.ones([2], dtype)])
    assert_bitwise_equal(*results)


def test_many_small_and_empty_variables():
    shapes = [(0,), (97,), (0, 3)] + [(97,)] * 300 + [(0,)]
    assert_bitwise_equal(run(ACCEPTED["Lion"](), "float32", steps=3, shapes=shapes),
                         run(reference(ACCEPTED["Lion"]), "float32", steps=3, shapes=shapes))


# -------------------------------------------------------------------------------------------- declined
@pytest.mark.parametrize("name", list(DECLINED))
def test_declined_rule_says_why_and_takes_the_plain_ops(name):
    factory, word = DECLINED[name]
    opt = factory()
    variables = [tf.Variable(tf.ones([2, 3]))]
    grads = [tf.ones([2, 3]) * 0.5]
    if name.startswith("user"):  # (users' bugs: Python state or .numpy() in update; stepped eagerly only)
        opt.apply_gradients(zip(grads, variables))
    else:
        assert "TfoptApplyRule" not in step_ops(opt, variables, grads)
    reason = compiler.explain(opt)
    assert reason is not None and word in reason, reason
    want = [tf.Variable(tf.ones([2, 3]))]
    ref = reference(factory)
    if name.startswith("user"):
        ref.apply_gradients(zip(grads, want))
    for _ in range(2):
        opt.apply_gradients(zip(grads, variables))
        ref.apply_gradients(zip(grads, want))
    assert_bitwise_equal([v.numpy() for v in variables], [v.numpy() for v in want])


def test_tracing_leaves_python_state_as_it_was():
    opt = user_rules.SharedChangeMomentum(0.05)
    assert "Python state" in compiler.explain(opt)
    assert opt.change == 0.0 and "change" not in vars(opt)


def test_rule_whose_graph_changes_between_steps_is_declined_from_then_on():
    class Counter(tfopt.Optimizer):
        """Reads a Python counter that step_values advances: a new graph every step."""

        count = 0.0

        def step_values(self, **_):
            self.count += 1.0
            return {}

        def update(self, grad, slots, *, learning_rate, **_):
            return learning_rate * self.count * grad, {}

    opt, ref = Counter(0.1), Counter(0.1, fused=False)
    x, y = tf.Variable([1.0, 2.0]), tf.Variable([1.0, 2.0])
    for _ in range(3):
        opt.apply_gradients([(tf.constant([1.0, 1.0]), x)])
        ref.apply_gradients([(tf.constant([1.0, 1.0]), y)])
    assert_bitwise_equal([x.numpy()], [y.numpy()])
    assert "another graph" in compiler.explain(opt)


def test_sparse_gradients_keep_their_path():
    rows = tf.IndexedSlices(tf.constant([[1.0, 2.0]]), tf.constant([1]), [3, 2])
    assert "TfoptApplyRule" not in step_ops(tfopt.RMSprop(0.1), [tf.Variable(tf.ones((3, 2)))], [rows])


def test_fused_false_xla_and_native_off_take_the_plain_ops(monkeypatch):
    x, g = tf.Variable([1.0, 2.0]), tf.constant([0.5, -0.5])
    assert "TfoptApplyRule" not in step_ops(tfopt.RMSprop(0.1, fused=False), [x], [g])
    opt = tfopt.RMSprop(0.1)
    xla = tf.function(lambda: opt.apply_gradients([(g, x)]), jit_compile=True)
    assert "TfoptApplyRule" not in [op.type for op in xla.get_concrete_function().graph.get_operations()]
    monkeypatch.setattr(native, "usable", lambda: False)
    assert "TfoptApplyRule" not in step_ops(tfopt.RMSprop(0.1), [x], [g])


def test_built_ins_keep_their_hand_written_ops():
    ops = step_ops(tfopt.Adam(0.1), [tf.Variable([1.0])], [tf.constant([1.0])])
    assert "TfoptApplyAdam" in ops and "TfoptApplyRule" not in ops


# -------------------------------------------------------------------------------------------- the cache key
def _key(opt, dtype=tf.float32):
    return compiler.translate(opt, dtype, compiler._next_scalar_names(opt)).key


def test_cache_key_follows_the_math():
    class Scaled(tfopt.Optimizer):
        factor = 2.0

        def update(self, grad, slots, *, learning_rate, **_):
            return learning_rate * (self.factor * grad), {}

    class Reordered(Scaled):
        def update(self, grad, slots, *, learning_rate, **_):
            return (learning_rate * self.factor) * grad, {}

    same = Scaled(0.1)
    other_constant = Scaled(0.1)
    other_constant.factor = 3.0
    assert _key(Scaled(0.1)) == _key(same)
    assert _key(other_constant) != _key(same)
    assert _key(Reordered(0.1)) != _key(same)
    assert _key(same, tf.float64) != _key(same)
    assert _key(user_rules.RMSprop(0.1)) != _key(tfopt.RMSprop(0.1))  # other ops (and names)


def test_a_graph_made_in_another_process_fails_clearly_not_with_a_stale_rule():
    with pytest.raises(tf.errors.FailedPreconditionError, match="not loaded in this process"):
        native.load().tfopt_apply_rule(var=[tf.Variable([1.0]).handle], slots=[], grad=[tf.constant([1.0])],
                                       scalars=tf.zeros([0]), T=tf.float32,
                                       rule="0123456789abcdef0123")


def test_python_control_flow_on_tensors_still_works_in_a_tf_function():
    """The base no longer lets AutoGraph convert its own loops (tracing cost), but ``update`` still is converted."""

    class Warmup(tfopt.Optimizer):
        def update(self, grad, slots, *, learning_rate, step, **_):
            if step < 3:  # a tensor: AutoGraph makes it a tf.cond in a tf.function
                return 0.5 * learning_rate * grad, {}
            return learning_rate * grad, {}

    x, y, g = tf.Variable([1.0, 2.0]), tf.Variable([1.0, 2.0]), tf.constant([1.0, -1.0])
    opt, eager = Warmup(0.1), Warmup(0.1)
    step = tf.function(lambda: opt.apply_gradients([(g, x)]))
    for _ in range(4):
        step()
        eager.apply_gradients([(g, y)])
    assert_bitwise_equal([x.numpy()], [y.numpy()])
    np.testing.assert_allclose(x.numpy(), [1.0 - 0.1 * 3, 2.0 + 0.1 * 3], rtol=1e-6)
    assert "cannot be traced" in compiler.explain(opt)


def test_a_scalar_step_is_declined_and_fails_as_the_plain_ops_do():
    class ScalarStep(tfopt.Optimizer):
        def update(self, grad, slots, *, learning_rate, **_):
            return learning_rate, {}  # not the variable's shape

    opt = ScalarStep(0.1)
    assert "is a scalar" in compiler.explain(opt)
    with pytest.raises(tf.errors.InvalidArgumentError):
        opt.apply_gradients([(tf.constant([1.0, 1.0]), tf.Variable([1.0, 2.0]))])
