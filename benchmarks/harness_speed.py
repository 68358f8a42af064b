"""Speed of ``tfopt.convergence_test`` against the TensorFlow guide's eager loop, in one process.

1. The guide's nine quartic runs (GradientDescent, Momentum, Adam x learning rates 1e-3, 1e-2,
   1e-1; x0 = 2, max_iters = 2000, float32) with the guide's own code, copied below.
2. The same nine runs with tfopt's compiled harness (steady state: each optimizer type traced
   once beforehand), checked bit for bit against the guide's paths and tfopt's eager loop.
3. The same nine runs with the opt-in XLA mode (``jit_compile=True``), steady state.
4. 10,000 Himmelblau starts (a 100 x 100 grid) x up to 2,000 iterations, compiled and with XLA,
   against the same batch run eagerly. The eager batch is timed on fewer iterations (``--eager-iters``)
   and the per-iteration rates are compared.

Usage: python benchmarks/harness_speed.py [--quick] [--eager-iters N] [--json FILE]
``--quick`` checks tfopt's eager loop on the first 100 iterations only (the full check runs
~11,000 eager iterations).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfopt  # noqa: E402
from tfopt.lab.harness import convergence_test  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The guide's code ("Optimizers with Core APIs"), verbatim apart from the lost indentation.
# ---------------------------------------------------------------------------------------------
# set random seed for reproducible results
tf.random.set_seed(22)


class GradientDescent(tf.Module):

    def __init__(self, learning_rate=1e-3):
        # Initialize parameters
        self.learning_rate = learning_rate
        self.title = f"Gradient descent optimizer: learning rate={self.learning_rate}"

    def apply_gradients(self, grads, vars):
        # Update variables
        for grad, var in zip(grads, vars):
            var.assign_sub(self.learning_rate*grad)


def loss(x):
    return 2*(x**4) + 3*(x**3) + 2


def grad(f, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        result = f(x)
    return tape.gradient(result, x)


def convergence_test_guide(optimizer, loss_fn, grad_fn=grad, init_val=2., max_iters=2000):
    # (the guide's ``convergence_test``, renamed so it does not shadow tfopt's)
    # Function for optimizer convergence test
    print(optimizer.title)
    print("-------------------------------")
    # Initializing variables and structures
    x_star = tf.Variable(init_val)
    param_path = []
    converged = False

    for iter in range(1, max_iters + 1):
        x_grad = grad_fn(loss_fn, x_star)

        # Case for exploding gradient
        if tf.math.is_nan(x_grad):
            print(f"Gradient exploded at iteration {iter}\n")
            return []

        # Updating the variable and storing its old-version
        x_old = x_star.numpy()
        optimizer.apply_gradients([x_grad], [x_star])
        param_path.append(x_star.numpy())

        # Checking for convergence
        if x_star == x_old:
            print(f"Converged in {iter} iterations\n")
            converged = True
            break

    # Print early termination message
    if not converged:
        print(f"Exceeded maximum of {max_iters} iterations. Test terminated.\n")
    return param_path


class Momentum(tf.Module):

    def __init__(self, learning_rate=1e-3, momentum=0.7):
        # Initialize parameters
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.change = 0.
        self.title = f"Gradient descent optimizer: learning rate={self.learning_rate}"

    def apply_gradients(self, grads, vars):
        # Update variables
        for grad, var in zip(grads, vars):
            curr_change = self.learning_rate*grad + self.momentum*self.change
            var.assign_sub(curr_change)
            self.change = curr_change


class Adam(tf.Module):

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, ep=1e-7):
        # Initialize the Adam parameters
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.learning_rate = learning_rate
        self.ep = ep
        self.t = 1.
        self.v_dvar, self.s_dvar = [], []
        self.title = f"Adam: learning rate={self.learning_rate}"
        self.built = False

    def apply_gradients(self, grads, vars):
        # Set up moment and RMSprop slots for each variable on the first call
        if not self.built:
            for var in vars:
                v = tf.Variable(tf.zeros(shape=var.shape))
                s = tf.Variable(tf.zeros(shape=var.shape))
                self.v_dvar.append(v)
                self.s_dvar.append(s)
            self.built = True
        # Perform Adam updates
        for i, (d_var, var) in enumerate(zip(grads, vars)):
            # Moment calculation
            self.v_dvar[i] = self.beta_1*self.v_dvar[i] + (1-self.beta_1)*d_var
            # RMSprop calculation
            self.s_dvar[i] = self.beta_2*self.s_dvar[i] + (1-self.beta_2)*tf.square(d_var)
            # Bias correction
            v_dvar_bc = self.v_dvar[i]/(1-(self.beta_1**self.t))
            s_dvar_bc = self.s_dvar[i]/(1-(self.beta_2**self.t))
            # Update model variables
            var.assign_sub(self.learning_rate*(v_dvar_bc/(tf.sqrt(s_dvar_bc) + self.ep)))
        # Increment the iteration counter
        self.t += 1.


# ---------------------------------------------------------------------------------------------
# The benchmark.
# ---------------------------------------------------------------------------------------------
RATES = [1e-3, 1e-2, 1e-1]
GUIDE = {"gd": GradientDescent, "momentum": Momentum, "adam": Adam}
TFOPT = {
    "gd": lambda lr: tfopt.GradientDescent(learning_rate=lr),
    "momentum": lambda lr: tfopt.Momentum(learning_rate=lr, momentum=0.7),
    "adam": lambda lr: tfopt.Adam(learning_rate=lr, epsilon=1e-7),
}
RUNS = [(name, lr) for name in GUIDE for lr in RATES]


def guide_outcome(printed: str) -> tuple[str, int]:
    """(status, iteration) from the guide's printed message."""
    last = printed.strip().splitlines()[-1]
    if last.startswith("Converged in "):
        return "converged", int(last.split()[2])
    if last.startswith("Gradient exploded at iteration "):
        return "exploded", int(last.split()[-1])
    return "max_iters", int(last.split()[3])


def run_guide() -> dict:
    out = {}
    for name, lr in RUNS:
        buffer = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(buffer):
            path = convergence_test_guide(GUIDE[name](learning_rate=lr), loss_fn=loss)
        seconds = time.perf_counter() - start
        out[name, lr] = dict(outcome=guide_outcome(buffer.getvalue()), path=np.asarray(path, np.float32),
                             seconds=seconds)
    return out


def tfopt_run(name, lr, **kw):
    return convergence_test(TFOPT[name](lr), loss, init=2.0, max_iters=2000, explode_on="nan", **kw)


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def same_bits(a, b) -> bool:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def nine_runs(args) -> dict:
    print("Running the guide's nine runs (eager, the guide's code; 35-60 s)...", flush=True)
    guide = run_guide()
    rows = {}
    for name, lr in RUNS:  # trace once per optimizer type; later calls only run
        tfopt_run(name, lr)
    for name, lr in RUNS:
        result = tfopt_run(name, lr)
        seconds = best_of(5, lambda: tfopt_run(name, lr))  # noqa: B023
        g = guide[name, lr]
        outcome_ok = (result.status, result.iterations) == g["outcome"]
        # The guide returns [] for an exploded run: only its outcome can be compared there.
        guide_bits = outcome_ok and (len(g["path"]) == 0 or same_bits(result.path[:, 0], g["path"]))
        eager_iters = 100 if args.quick else 2000
        eager = convergence_test(TFOPT[name](lr), loss, init=2.0, max_iters=eager_iters, explode_on="nan", eager=True)
        short = tfopt_run(name, lr) if not args.quick else convergence_test(
            TFOPT[name](lr), loss, init=2.0, max_iters=eager_iters, explode_on="nan")
        eager_bits = (same_bits(short.path, eager.path) and same_bits(short.losses, eager.losses)
                      and (short.status, short.iterations) == (eager.status, eager.iterations))
        rows[name, lr] = dict(result=result, seconds=seconds, guide_seconds=g["seconds"], outcome_ok=outcome_ok,
                              guide_bits=guide_bits, eager_bits=eager_bits)

    def sweeps(**kw):
        return [convergence_test(TFOPT[name](1.0), loss, init=2.0, max_iters=2000, learning_rate=RATES,
                                 explode_on="nan", **kw) for name in GUIDE]

    def nine(**kw):
        return [tfopt_run(name, lr, **kw) for name, lr in RUNS]

    sweeps()
    sweep_seconds = best_of(5, sweeps)
    xla = nine(jit_compile=True)  # compiles once per optimizer type
    sweeps(jit_compile=True)
    xla_seconds = best_of(5, lambda: nine(jit_compile=True))
    xla_sweep_seconds = best_of(5, lambda: sweeps(jit_compile=True))
    xla_outcomes = sum((r.status, r.iterations) == guide[run]["outcome"] for r, run in zip(xla, RUNS))
    xla_bits = sum(same_bits(r.path, rows[run]["result"].path) for r, run in zip(xla, RUNS))
    return dict(rows=rows, guide_seconds=sum(g["seconds"] for g in guide.values()),
                compiled_seconds=sum(r["seconds"] for r in rows.values()), sweep_seconds=sweep_seconds,
                xla_seconds=xla_seconds, xla_sweep_seconds=xla_sweep_seconds, xla_outcomes=xla_outcomes,
                xla_bits=xla_bits)


def himmelblau_batch(args) -> list[dict]:
    axis = np.linspace(-5.0, 5.0, 100, dtype=np.float32)
    starts = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)  # 10,000 starts
    rows = []
    for label, make in [("GradientDescent(1e-3)", lambda: tfopt.GradientDescent(1e-3)),
                        ("Momentum(1e-3, 0.7)", lambda: tfopt.Momentum(1e-3, momentum=0.7)),
                        ("Adam(1e-2)", lambda: tfopt.Adam(1e-2))]:
        print(f"Himmelblau batch: {label}...", flush=True)
        row = dict(optimizer=label)
        for mode, kw in (("compiled", {}), ("xla", dict(jit_compile=True))):
            def full(kw=kw, make=make):
                return convergence_test(make(), "himmelblau", init=starts, max_iters=2000, **kw)
            batch = full()  # trace / compile and first run; then the steady state
            seconds = best_of(2, full)
            row[mode] = dict(seconds=seconds, iterations=int(batch.iterations.max()),
                             per_iter=seconds / batch.iterations.max(),
                             converged=int((batch.status == "converged").sum()))
        short = dict(init=starts, max_iters=args.eager_iters)
        compiled = convergence_test(make(), "himmelblau", **short)
        start = time.perf_counter()
        eager = convergence_test(make(), "himmelblau", eager=True, **short)
        seconds = time.perf_counter() - start
        row["eager"] = dict(seconds=seconds, iterations=int(eager.iterations.max()),
                            per_iter=seconds / eager.iterations.max())
        row["same_bits"] = bool(same_bits(compiled.x_final, eager.x_final)
                                and np.array_equal(compiled.iterations, eager.iterations))
        rows.append(row)
    return rows


def report(nine: dict, batch: list[dict], args) -> None:
    print()
    print(f"tfopt convergence harness vs the guide's eager loop  (TensorFlow {tf.__version__}, "
          f"{os.cpu_count()} CPUs)")
    print()
    print("The guide's nine runs: quartic 2x^4 + 3x^3 + 2, x0 = 2, max_iters = 2000, float32")
    head = f"{'run':<16}{'outcome':<17}{'guide s':>9}{'tfopt ms':>10}{'ratio':>8}   {'= guide':<9}{'= tfopt eager':<14}"
    print(head)
    print("-" * len(head))
    yes = {True: "yes", False: "NO"}
    for (name, lr), r in nine["rows"].items():
        res = r["result"]
        print(f"{name + ' ' + format(lr, 'g'):<16}{res.status + ' @' + str(res.iterations):<17}"
              f"{r['guide_seconds']:>9.2f}{r['seconds'] * 1e3:>10.1f}{r['guide_seconds'] / r['seconds']:>7.0f}x   "
              f"{yes[r['guide_bits']]:<9}{yes[r['eager_bits']]:<14}")
    g = nine["guide_seconds"]
    n_guide = sum(r["guide_bits"] for r in nine["rows"].values())
    n_eager = sum(r["eager_bits"] for r in nine["rows"].values())
    eager_note = " (first 100 iterations)" if args.quick else ""
    print("-" * len(head))
    lines = [
        ("nine calls, compiled", nine["compiled_seconds"], f"bits: {n_guide}/9 = guide, {n_eager}/9 = tfopt eager"
                                                          f"{eager_note}"),
        ("3 sweep calls, compiled", nine["sweep_seconds"], "one call per optimizer, per-row learning rates"),
        ("nine calls, XLA", nine["xla_seconds"], f"outcomes {nine['xla_outcomes']}/9 = guide, "
                                                 f"bits {nine['xla_bits']}/9 = compiled"),
        ("3 sweep calls, XLA", nine["xla_sweep_seconds"], ""),
    ]
    print(f"{'total: guide, eager':<33}{g:>9.2f} s")
    for label, seconds, note in lines:
        print(f"{label:<33}{seconds * 1e3:>9.1f} ms {g / seconds:>7.0f}x   {note}")
    print()
    print("Himmelblau: 10,000 starts (100 x 100 grid on [-5, 5]^2) x up to 2,000 iterations, one call")
    print(f"(steady state, best of 2; the eager batch is timed on {args.eager_iters} iterations and the ratios "
          "compare time per iteration; '= eager': same bits after those iterations)")
    head = (f"{'optimizer':<23}{'iters':>6}{'compiled s':>11}{'us/iter':>9}{'XLA s':>8}{'us/iter':>9}"
            f"{'eager us/iter':>15}{'compiled':>10}{'XLA':>8}  {'= eager':<8}")
    print(head)
    print("-" * len(head))
    for row in batch:
        c, x, e = row["compiled"], row["xla"], row["eager"]
        print(f"{row['optimizer']:<23}{c['iterations']:>6}{c['seconds']:>11.2f}{c['per_iter'] * 1e6:>9.0f}"
              f"{x['seconds']:>8.2f}{x['per_iter'] * 1e6:>9.0f}{e['per_iter'] * 1e6:>15.0f}"
              f"{e['per_iter'] / c['per_iter']:>9.0f}x{e['per_iter'] / x['per_iter']:>7.0f}x  "
              f"{yes[row['same_bits']]:<8}")
    print()
    batch_ratio = min(r["eager"]["per_iter"] / r["compiled"]["per_iter"] for r in batch)
    batch_xla = min(r["eager"]["per_iter"] / r["xla"]["per_iter"] for r in batch)
    checks = [
        ("nine runs >= 50x faster than the guide (compiled, 9 calls)", g / nine["compiled_seconds"], 50),
        ("nine runs bit-identical to the guide and to tfopt's eager loop", min(n_guide, n_eager), 9),
        ("XLA >= 1000x faster in steady state (9 calls)", g / nine["xla_seconds"], 1000),
        ("10,000-start batch >= 20x faster than eager (compiled, worst optimizer)", batch_ratio, 20),
        ("10,000-start batch >= 20x faster than eager (XLA, worst optimizer)", batch_xla, 20),
    ]
    for label, value, target in checks:
        print(f"  [{'pass' if value >= target else 'MISS'}] {label}: {value:.0f} (target {target})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="check tfopt's eager loop on 100 iterations only")
    parser.add_argument("--eager-iters", type=int, default=30, help="iterations of the eager 10,000-start batch")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    nine = nine_runs(args)
    batch = himmelblau_batch(args)
    report(nine, batch, args)
    if args.json:
        summary = {
            "guide_seconds": nine["guide_seconds"], "compiled_seconds": nine["compiled_seconds"],
            "sweep_seconds": nine["sweep_seconds"], "xla_seconds": nine["xla_seconds"],
            "xla_sweep_seconds": nine["xla_sweep_seconds"],
            "runs": {f"{n}_{lr:g}": dict(status=r["result"].status, iterations=r["result"].iterations,
                                         guide_seconds=r["guide_seconds"], seconds=r["seconds"],
                                         guide_bits=r["guide_bits"], eager_bits=r["eager_bits"])
                     for (n, lr), r in nine["rows"].items()},
            "himmelblau_batch": batch,
        }
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
