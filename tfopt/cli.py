"""The ``tfopt`` command: ``tfopt bench``, ``tfopt run``, ``tfopt problems``, ``tfopt doctor``.

Arguments are checked before TensorFlow is imported (``import tfopt`` imports none),
so ``--help`` and argument errors take a fraction of a second. A bad argument exits
with status 2 and one line on stderr naming the valid choices; never a traceback.

TensorFlow's C++ start-up lines (oneDNN, CUDA, absl) are hidden: the command sets
``TF_CPP_MIN_LOG_LEVEL=2`` unless you set it yourself, and lines below that level that
TensorFlow's libraries print while they load are filtered out (``TF_CPP_MIN_LOG_LEVEL=0``
shows them all). ``tfopt doctor`` reports the versions, the CPU, the C++ compiler and
whether tfopt's native kernels load (exit status 1 if not).

``--optimizer`` takes a built-in name (``adam``, ``gradient_descent``, ...; any case, ``_``/``-``
optional) or an import path ``package.module:ClassName`` of your own ``tfopt.Optimizer``
subclass (``tfopt bench`` takes several), or a wrapper around either, ``lookahead(adam)``
(``apply_if_finite``, ``multi_steps``, ``lookahead``, ``moving_average``; nested too);
``--set NAME=VALUE`` sets a hyperparameter (or option) of every optimizer that declares it
(a wrapper's own, such as ``sync_period``, or its inner optimizer's). A path is checked for its
form while parsing and imported after (your module imports TensorFlow); the folder you run the
command from is searched first, as ``python -m`` does. A path that does not import, or is not a
``tfopt.Optimizer`` subclass, is one line and exit status 2 as well.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import tfopt

__all__ = ["main", "build_parser"]

PROG = "tfopt"

OPTIMIZERS = {module.rpartition(".")[2]: name for name, module in tfopt._RULE_HOMES.items()}
"""Command-line names of the optimizers -> ``tfopt.RULES`` names: a rule's module name (``gradient_descent``), read from
``tfopt._RULE_HOMES`` so that checking a name needs no TensorFlow."""
WRAPPERS = {module.rpartition(".")[2]: name for name, module in tfopt._WRAPPER_HOMES.items()}
"""Command-line names of the wrappers (``lookahead``) -> class names; given as ``lookahead(adam)``."""
_ALIASES = {"gd": "gradientdescent", "sgd": "gradientdescent"}  # squashed spellings
_WRAPPED = re.compile(r"([\w -]+)\((.+)\)")
BENCH_DEFAULT = ("gradient_descent", "momentum", "adam")
"""What ``tfopt bench`` compares without ``--optimizer`` (the others by name, e.g. ``--optimizer lion``)."""
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_SETTING = re.compile(r"([A-Za-z_]\w*)=(.+)")

PROBLEMS = ("quartic", "himmelblau", "rosenbrock", "beale", "booth", "rastrigin", "ackley", "goldstein_price",
            "six_hump_camel")
"""``tfopt.problems.names()``, spelled out so that checking a name needs no TensorFlow (a test keeps them equal)."""

PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
SUITES = ("analytic", "train", "all")
"""``tfopt bench --suite`` choices (``tfopt.lab.bench.SUITES``; a test keeps them equal)."""

EXAMPLES = """\
examples:
  tfopt bench                       run the convergence benchmark, report in ./tfopt-report
  tfopt bench --quick --out /tmp/r  a few-seconds subset
  tfopt bench --quick --optimizer adam --optimizer my_rules.rules:RMSprop --set rho=0.8
                                    your own optimizer beside Adam
  tfopt bench --suite train --quick --optimizer adam --optimizer lazy_adam
                                    train real models; time to target, performance profile
  tfopt bench --suite all --ray auto  both suites, training trials on a Ray cluster
  tfopt bench --quick --optimizer "lookahead(adam)" --optimizer adam --set sync_period=4
                                    a wrapper around Adam beside Adam
  tfopt run --optimizer adam --learning-rate 0.1 --problem himmelblau --init -4,0 --plot adam.png
  tfopt problems                    list the test problems and their minima
  tfopt doctor                      versions, CPU, compiler and native kernels, for a bug report
"""


class UsageError(Exception):
    """A bad argument found after parsing (e.g. an --init of the wrong length); exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ------------------------------------------------------------- argument types
def _normal(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _squashed(name: str) -> str:
    return re.sub(r"[\s_-]", "", name.lower())


def optimizer_name(text: str) -> str:
    """A built-in's command-line name (``adam``; any case, ``_``/``-``/spaces optional, ``gd``/``sgd``), an
    import path ``package.module:ClassName`` as given (imported after parsing: see ``import_optimizers``), or a
    wrapper around either, ``lookahead(adam)`` (nested too: ``apply_if_finite(lookahead(adam))``)."""
    text = text.strip()
    wrapped = _WRAPPED.fullmatch(text)
    if wrapped is not None:
        outer = _squashed(wrapped.group(1))
        for name in WRAPPERS:
            if outer == _squashed(name):
                return f"{name}({optimizer_name(wrapped.group(2))})"
        raise argparse.ArgumentTypeError(f"unknown wrapper {wrapped.group(1).strip()!r} in {text!r}; choose from "
                                         f"{', '.join(WRAPPERS)}, e.g. lookahead(adam)")
    if ":" in text:
        if not _IMPORT_PATH.fullmatch(text):
            raise argparse.ArgumentTypeError(f"malformed import path {text!r}; give package.module:ClassName")
        return text
    key = _squashed(text)
    key = _ALIASES.get(key, key)
    for name in OPTIMIZERS:
        if key == _squashed(name):
            return name
    hint = ""
    if "." in text and re.fullmatch(r"[\w.]+", text):
        module, _, cls = text.rpartition(".")
        hint = f" (did you mean {module}:{cls}?)"
    raise argparse.ArgumentTypeError(f"unknown optimizer {text!r}{hint}; choose from {', '.join(OPTIMIZERS)}, or "
                                     "give an import path package.module:ClassName")


def setting(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` -> (name, value text); the value is converted once the optimizers are known."""
    match = _SETTING.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"malformed {text!r}; give NAME=VALUE, e.g. --set rho=0.8")
    return match.group(1), match.group(2).strip()


def learning_rates(text: str) -> list[float]:
    """``1e-3,1e-2`` -> [0.001, 0.01]: positive numbers."""
    parts = [p.strip() for p in text.strip().strip("[]()").split(",")]
    try:
        return [positive_number(p) for p in parts]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"malformed {text!r}; give comma-separated positive numbers, "
                                         "e.g. 1e-3,1e-2") from None


def ray_address(text: str) -> str:
    """``auto``, ``host:port`` or ``ray://host:port`` (checked for its form only; Ray connects later)."""
    text = text.strip()
    if text != "auto" and not re.fullmatch(r"(ray://)?[\w.\-\[\]:]+:\d+", text):
        raise argparse.ArgumentTypeError(f"malformed Ray address {text!r}; give auto, host:port or ray://host:port")
    return text


def problem_name(text: str) -> str:
    key = _normal(text)
    if key not in PROBLEMS:
        raise argparse.ArgumentTypeError(f"unknown problem {text!r}; choose from {', '.join(PROBLEMS)}")
    return key


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number (e.g. 0.1 or 1e-3)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1 (e.g. 2000)")
    return value


def point(text: str) -> tuple[float, ...]:
    """'-4,0' -> (-4.0, 0.0); brackets and spaces are allowed."""
    parts = [p.strip() for p in text.strip().strip("[]()").split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"malformed {text!r}; give comma-separated numbers, e.g. --init=-4,0 "
                                         "(one number per dimension)")
    return values


def plot_file(text: str) -> Path:
    path = Path(text).expanduser()
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise argparse.ArgumentTypeError(f"cannot write a figure to {text!r}; the file must end in "
                                         f"{', '.join(PLOT_SUFFIXES)}")
    _check_writable(path.parent, text, create=False)
    return path


def gif_file(text: str) -> Path:
    path = Path(text).expanduser()
    if path.suffix.lower() != ".gif":
        raise argparse.ArgumentTypeError(f"cannot write an animation to {text!r}; the file must end in .gif")
    _check_writable(path.parent, text, create=False)
    return path


def _check_writable(folder: Path, what: str, create: bool) -> None:
    """Raise ArgumentTypeError unless files can be written in ``folder`` (created if ``create``)."""
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            raise FileNotFoundError(f"no folder {str(folder)!r}")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise argparse.ArgumentTypeError(f"cannot write to {what!r}: {reason}; choose a writable folder") from None


def output_folder(text: str) -> Path:
    path = Path(text).expanduser()
    _check_writable(path, text, create=True)
    return path


# ------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Write, run and compare gradient-based optimizers in TensorFlow: "
                     "the convergence lab.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)

    bench = commands.add_parser(
        "bench", help="run the convergence benchmark and write its report (the main job)",
        description="Run GradientDescent, Momentum and Adam (or the --optimizer's given) at learning rates 1e-3, "
        "1e-2, 1e-1 (or --learning-rates) on every test problem from its default start, plus a basin map; print "
        "the table and write report.md, results.csv, results.json and the figures (PNG) to DIR. With --suite train "
        "(or all): train small real models (scikit-learn's breast-cancer, diabetes and digits data, a sparse "
        "embedding task, a noisy quadratic) with each optimizer x learning rate (1e-3 to 1) x 3 seeds, in worker "
        "processes (or on Ray), and report the steps and seconds to a validation target and a performance profile "
        "(train_results.csv, train_results.json, performance_profile.png, train_curves.png).",
        epilog="examples:\n  tfopt bench --quick --optimizer adam --optimizer my_rules.rules:RMSprop --set rho=0.8\n"
        "  tfopt bench --suite train --quick --optimizer adam --optimizer lazy_adam --workers 2\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--out", metavar="DIR", type=output_folder, default=Path("tfopt-report"),
                       help="folder for the report (created if needed; default: ./tfopt-report)")
    bench.add_argument("--quick", action="store_true", help="a quick subset: two problems, a small basin map (a few "
                       "seconds); training: one seed, two learning rates, shorter budgets (under a minute)")
    bench.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    bench.add_argument("--optimizer", dest="optimizers", action="append", type=optimizer_name, metavar="NAME",
                       help=f"an optimizer to run, repeatable: {', '.join(OPTIMIZERS)}, an import path "
                       "package.module:ClassName of a tfopt.Optimizer subclass, or a wrapper around either: "
                       f"{', '.join(WRAPPERS)}, e.g. 'lookahead(adam)' (default: gradient_descent, momentum, adam)")
    bench.add_argument("--learning-rates", "--lrs", type=learning_rates, metavar="LR[,LR...]",
                       help="comma-separated learning rates (default: 1e-3,1e-2,1e-1; training: 1e-3 to 1 in "
                       "half decades, quick: 1e-2,1e-1)")
    bench.add_argument("--suite", choices=SUITES, default="analytic",
                       help="analytic: the test functions (default); train: real training workloads (logistic and "
                       "linear regression, MLP, conv net, autoencoder, sparse embedding, noisy quadratic) with time "
                       "to target and a performance profile; all: both, in one report")
    bench.add_argument("--workers", type=positive_int, metavar="N",
                       help="worker processes for the training trials (default: one per CPU; 1 = in this process); "
                       "the analytic suite runs batched in this process")
    bench.add_argument("--ray", type=ray_address, metavar="ADDRESS",
                       help="run the training trials on a Ray cluster: auto (the one 'ray start' runs here), "
                       'host:port or ray://host:port (needs pip install "tfopt[ray]")')
    _add_set(bench)
    bench.set_defaults(run=_bench)

    run = commands.add_parser(
        "run", help="run one optimizer on one problem and print the outcome",
        description="Run one optimizer on one test problem until it converges, explodes or reaches --max-iters, "
        "and print how it stopped.",
        epilog="example: tfopt run --optimizer adam --learning-rate 0.1 --problem himmelblau --init -4,0",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--optimizer", required=True, type=optimizer_name, metavar="NAME",
                     help=f"one of: {', '.join(OPTIMIZERS)}, an import path package.module:ClassName of a "
                     f"tfopt.Optimizer subclass, or a wrapper around either: {', '.join(WRAPPERS)}, e.g. "
                     "'lookahead(adam)'")
    run.add_argument("--learning-rate", "--lr", required=True, type=positive_number, metavar="LR",
                     help="a positive number, e.g. 0.1")
    run.add_argument("--problem", required=True, type=problem_name, metavar="NAME",
                     help="a test problem: " + ", ".join(PROBLEMS))
    run.add_argument("--init", type=point, metavar="X[,Y]",
                     help="the start, comma-separated (default: the problem's default start)")
    run.add_argument("--max-iters", type=positive_int, default=2000, metavar="N",
                     help="iteration budget (default: 2000)")
    run.add_argument("--plot", type=plot_file, metavar="FILE",
                     help=f"also draw the path and the loss curve to FILE ({', '.join(PLOT_SUFFIXES)})")
    run.add_argument("--animate", type=gif_file, metavar="FILE.gif",
                     help="also write an animated GIF of the run moving over the problem, step by step")
    _add_set(run)
    run.set_defaults(run=_run)

    problems = commands.add_parser("problems", help="list the test problems with their minima",
                                   description="List the test problems: dimension, minimum value, default start, "
                                   "known global minima and formula.")
    problems.set_defaults(run=_problems)

    doctor = commands.add_parser(
        "doctor", help="report versions, CPU, C++ compiler and whether the native kernels load (exit 1 if not)",
        description="Print tfopt's, TensorFlow's, Keras's, Python's and NumPy's versions, the platform, the CPU "
        "and its vector features, the C++ compiler, and whether tfopt's native kernels load (building them "
        "first if needed, ~15 s once); if they do not, why, with the end of the build log. Paste it into a bug "
        "report.",
        epilog="exit status: 0 if the native kernels load, 1 if not (tfopt then runs TensorFlow's own kernels: "
        "the same numbers, slower).")
    doctor.set_defaults(run=_doctor)
    return parser


def _add_set(parser) -> None:
    parser.add_argument("--set", "--hp", dest="settings", action="append", type=setting, default=[],
                        metavar="NAME=VALUE", help="set a hyperparameter (or option) of every optimizer that "
                        "declares it, repeatable: --set rho=0.8 --set nesterov=true")


def _join_option_values(argv: Sequence[str]) -> list[str]:
    """Let ``--init -4,0`` through: argparse would read ``-4,0`` as an option, so join it as ``--init=-4,0``."""
    out, args = [], list(argv)
    i = 0
    while i < len(args):
        if args[i] in ("--init", "--set", "--hp") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tfopt`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow; yours wins
    parser = build_parser()
    try:
        args = parser.parse_args(_join_option_values(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:  # --help (0) or a bad argument (2, message already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return args.run(args)
    except UsageError as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # e.g. the disk filled up while writing the report
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 1


# ------------------------------------------------------- quiet TensorFlow start
_LOG_LINE = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
"""An absl/glog line, ``I0000 00:00:1796224142.541288    2920 cudart_stub.cc:31] ...``; group 1 is the severity."""
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_NO_CUDA_DEVICE = "failed call to cuInit"
"""Logged as an error by a CUDA build of TensorFlow on a machine without a usable GPU: there, it only means that."""


def _min_log_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def _hidden(line: str, level: int, gpus: bool = True) -> bool:
    """Whether ``TF_CPP_MIN_LOG_LEVEL=level`` hides the start-up line ``line`` (and without ``gpus``, CUDA's error)."""
    if line.rstrip("\n") == _ABSL_PREAMBLE:
        return level >= 1
    match = _LOG_LINE.match(line)
    if match is None:
        return False
    return "IWEF".index(match.group(1)) < level or (level >= 1 and not gpus and _NO_CUDA_DEVICE in line)


@contextlib.contextmanager
def _held_stderr():
    """Hold what the block writes to file descriptor 2, C++ code included; the text is ``held.text`` afterwards."""
    held = argparse.Namespace(text="")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to hold
        yield held
        return
    with tempfile.TemporaryFile() as file:
        os.dup2(file.fileno(), 2)
        try:
            yield held
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            file.seek(0)
            held.text = file.read().decode(errors="replace")


def _start_tensorflow():
    """Import TensorFlow (which imports Keras) and set up its devices without its start-up log lines.

    TensorFlow's libraries log their start-up notes (oneDNN, CUDA) through absl before its logging is set up,
    where ``TF_CPP_MIN_LOG_LEVEL`` does not reach them: this holds stderr meanwhile and passes on the lines that
    level does not hide (so ``TF_CPP_MIN_LOG_LEVEL=0`` shows them all). Nothing but such lines is dropped.
    """
    level = _min_log_level()
    if level >= 1 and "tensorflow" not in sys.modules:
        gpus = True
        try:
            with _held_stderr() as held:
                import tensorflow as tf

                tf.config.list_logical_devices()  # the devices' set-up logs too: do it now
                gpus = bool(tf.config.list_physical_devices("GPU"))
        finally:
            kept = "".join(line for line in held.text.splitlines(keepends=True) if not _hidden(line, level, gpus))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # tf.function retracing notes are expected here: one trace per batch


# --------------------------------------------------------------- optimizers
@dataclasses.dataclass(frozen=True)
class Wrapped:
    """``lookahead(adam)`` on the command line: called like a rule's class, it builds the wrapper around the inner
    optimizer, each with the keywords it declares (``learning_rate`` goes to the inner one)."""

    wrapper: type
    inner: type | Wrapped

    @property
    def __name__(self) -> str:
        return f"{self.wrapper.__name__}({self.inner.__name__})"

    def declared(self) -> dict:
        return {**_declared(self.inner), **_declared(self.wrapper)}

    def __call__(self, **kwargs):
        own = _declared(self.wrapper)
        inner = self.inner(**{k: v for k, v in kwargs.items() if k not in own})
        return self.wrapper(inner, **{k: v for k, v in kwargs.items() if k in own})


def _declared(cls) -> dict:
    """``{name: declaration}`` of a rule's or a wrapper's hyperparameters and options, ``learning_rate`` aside."""
    from tfopt.core.hyperparameters import declared

    if isinstance(cls, Wrapped):
        return cls.declared()
    return {d.name: d for d in declared(cls) if d.name != "learning_rate"}


def import_optimizers(names: Sequence[str]) -> list:
    """The classes of ``optimizer_name``'s results, in order (TensorFlow must be started); a wrapper spec gives
    a ``Wrapped``.

    An import path's module is imported (from the current folder first, as ``python -m`` does);
    one that does not import or is not a ``tfopt.Optimizer`` subclass raises ``UsageError``.
    """
    from tfopt.integrations.keras_optimizer import import_rule

    classes = []
    for name in names:
        wrapped = _WRAPPED.fullmatch(name)
        if wrapped is not None and wrapped.group(1) in WRAPPERS:
            [inner] = import_optimizers([wrapped.group(2)])
            classes.append(Wrapped(getattr(tfopt, WRAPPERS[wrapped.group(1)]), inner))
            continue
        if name in OPTIMIZERS:
            classes.append(tfopt.RULES[OPTIMIZERS[name]])
            continue
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            classes.append(import_rule(name))
        except ValueError as error:
            raise UsageError(f"--optimizer: {str(error)[0].lower()}{str(error)[1:]}") from None
        except SystemExit:  # a module that exits while it is imported
            raise UsageError(f"--optimizer: importing {name.partition(':')[0]!r} called exit()") from None
    return list(dict.fromkeys(classes))


def _converted(text: str, declaration):
    """A --set value as the declaration wants it: a number for a hyperparameter; for an option, its default's type
    (true/false/yes/no/on/off/1/0 for a bool)."""
    from tfopt.core.hyperparameters import REQUIRED, Hyperparameter

    words = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
    if isinstance(declaration, Hyperparameter):
        kind = float
    else:
        kind = None if declaration.default in (REQUIRED, None) else type(declaration.default)
    if kind is bool or (kind is None and text.lower() in words):
        if text.lower() not in words:
            raise ValueError(f"{text!r} is not true or false")
        return words[text.lower()]
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
    if kind is None:
        for number in (int, float):
            try:
                return number(text)
            except ValueError:
                pass
    return text


def hyperparameter_settings(classes: Sequence[type], settings: Sequence[tuple[str, str]]) -> list[dict]:
    """Each class's constructor keywords from ``--set`` (converted and checked); ``UsageError`` on a bad one.

    A name goes to every class that declares it (a ``tfopt.Hyperparameter`` or ``tfopt.Option``);
    one that none declares is an error listing theirs.
    """
    declared = [_declared(c) for c in classes]
    kwargs = [{} for _ in classes]
    for name, text in settings:
        if name == "learning_rate":
            raise UsageError(f"--set {name}={text}: give the learning rate with --learning-rate"
                             f"{'s' if len(classes) > 1 else ''}")
        if not any(name in d for d in declared):
            if len(classes) == 1:
                raise UsageError(f"--set {name}={text}: {classes[0].__name__} has no hyperparameter {name!r}; "
                                 f"its hyperparameters are {', '.join(declared[0]) or '(none)'}")
            theirs = "; ".join(f"{c.__name__} has {', '.join(d) or 'none'}" for c, d in zip(classes, declared))
            raise UsageError(f"--set {name}={text}: none of the optimizers has a hyperparameter {name!r}; {theirs}")
        for d, k in zip(declared, kwargs):
            if name in d:
                try:
                    k[name] = _converted(text, d[name])
                except ValueError as error:
                    raise UsageError(f"--set {name}={text}: {error}") from None
    for cls, k in zip(classes, kwargs):
        try:
            cls(**k)  # the declarations' checks, now rather than halfway through a run
        except (ValueError, TypeError) as error:
            raise UsageError(f"--set {', '.join(f'{n}={v}' for n, v in k.items())} ({cls.__name__}): "
                             f"{' '.join(str(error).split())}") from None
    return kwargs


# ----------------------------------------------------------------- commands
def _bench(args) -> int:
    _start_tensorflow()
    from tfopt.lab import bench

    names = list(dict.fromkeys(args.optimizers or BENCH_DEFAULT))
    classes = import_optimizers(names)
    kwargs = hyperparameter_settings(classes, args.settings)
    optimizers = [cls(**k) for cls, k in zip(classes, kwargs)]
    import importlib.util

    if args.suite != "analytic" and importlib.util.find_spec("sklearn") is None:
        raise UsageError(f'--suite {args.suite} trains on scikit-learn\'s data sets, and scikit-learn is not '
                         'installed: pip install "tfopt[train]"')
    if args.ray is not None:
        if args.workers is not None:
            raise UsageError("give --workers or --ray, not both (Ray decides where its trials run)")
        if args.suite == "analytic":
            raise UsageError("--ray runs the training trials: add --suite train or --suite all")
        if importlib.util.find_spec("ray") is None:
            raise UsageError('--ray needs Ray, which is not installed: pip install "tfopt[ray]"')
    report = bench.run_benchmark(args.out, quick=args.quick, progress=args.progress, optimizers=optimizers,
                                 learning_rates=args.learning_rates,
                                 hyperparameters={n: v for k in kwargs for n, v in k.items()},
                                 suite=args.suite, workers=args.workers, ray=args.ray)
    print(f"\nReport written to {(report.out_dir / 'report.md').resolve()}")
    tables = [p.name for p in report.files if p.suffix in (".csv", ".json")]
    images = [p for p in report.files if p.suffix in (".png", ".gif")]
    kinds = " and ".join(sorted({p.suffix[1:].upper() for p in images})) or "PNG"
    print(f"  (with {', '.join(tables) or 'its tables'} and {len(images)} {kinds} figures in "
          f"{report.out_dir.resolve()})")
    return 0


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.7g}" for v in values) + ")"


def _run(args) -> int:
    _start_tensorflow()
    from tfopt.lab import problems as problems_lib

    problem = problems_lib.get(args.problem)
    init = args.init if args.init is not None else problem.default_init
    if len(init) != problem.dim:
        raise UsageError(f"--init has {len(init)} number{'s' * (len(init) != 1)} but {problem.name} has dim "
                         f"{problem.dim}; give {problem.dim} comma-separated number{'s' * (problem.dim != 1)}, "
                         f"e.g. --init={','.join(f'{v:g}' for v in problem.default_init)}")
    import numpy as np

    from tfopt.lab.harness import convergence_test

    [cls] = import_optimizers([args.optimizer])
    [kwargs] = hyperparameter_settings([cls], args.settings)
    name = cls.__name__
    optimizer = cls(learning_rate=args.learning_rate, **kwargs)
    result = convergence_test(optimizer, problem, init=np.asarray(init, dtype=np.float32),
                              max_iters=args.max_iters, record_path=args.plot is not None or args.animate is not None)
    label = f"{name} lr={args.learning_rate:g}"
    how = {"converged": f"converged after {result.iterations} iterations (an update left x unchanged)",
           "exploded": f"exploded at iteration {result.iterations} (NaN or Inf)",
           "max_iters": f"max_iters: still moving after {result.iterations} iterations"}
    print(f"{label} on {problem.name} from {_fmt(init)}")
    print(f"  status:           {how.get(result.status, result.status)}")
    print(f"  x_final:          {_fmt(result.x_final)}")
    print(f"  loss_final:       {result.loss_final:.7g}   (f_min {problem.f_min:.7g}, "
          f"gap {result.loss_final - problem.f_min:.3g})")
    if result.status != "exploded" and result.nearest_minimum is not None:
        print(f"  nearest minimum:  {_fmt(result.nearest_minimum)} at distance {result.distance_to_minimum:.3g}")
    print(f"  wall time:        {result.wall_time:.2f} s (tracing included)")
    if args.plot is not None:
        _plot_run(result, problem, label, args.plot, init)
        print(f"Figure written to {args.plot.resolve()}")
    if args.animate is not None:
        from tfopt.lab.animation import animate_paths

        animate_paths({label: result}, problem, args.animate, init=init)
        print(f"Animation written to {args.animate.resolve()}")
    return 0


def _plot_run(result, problem, label, path, init):
    from matplotlib.figure import Figure

    from tfopt.lab import plotting

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    draw = plotting.plot_paths_1d if problem.dim == 1 else plotting.plot_paths_2d
    draw({label: result}, problem, ax=left, init=init)
    plotting.plot_loss_curves({label: result}, ax=right, problem=problem)
    plotting.save_figure(fig, path)


def _problems(args) -> int:
    _start_tensorflow()
    from tfopt.lab import problems as problems_lib

    rows = [(p.name, str(p.dim), f"{p.f_min:.7g}", _fmt(p.default_init), ", ".join(_fmt(m) for m in p.minima))
            for p in problems_lib.ALL.values()]
    header = ("name", "dim", "f_min", "default start", "known global minima")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[-1])
    for row, problem in zip(rows, problems_lib.ALL.values()):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        print(" " * 4 + problem.description)
    print(f"\n{len(rows)} problems; use a name with: tfopt run --problem NAME ...")
    return 0


# ------------------------------------------------------------------- doctor
X86_FEATURES = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512fp16", "amx")
ARM_FEATURES = ("neon", "asimd", "sve")
_WIDTH = 16
_DOCTOR_ENV = ("TFOPT_NATIVE", "TFOPT_NATIVE_FLAGS", "TFOPT_CACHE_DIR", "CXX", "TF_ENABLE_ONEDNN_OPTS")
_CPUINFO_NAMES = {"avx512fp16": ("avx512_fp16", "avx512fp16"), "amx": ("amx_tile", "amx_bf16", "amx_int8", "amx")}
"""/proc/cpuinfo's spellings of the features whose usual name differs (Linux says ``avx512_fp16``, ``amx_*``)."""


def cpu_info(cpuinfo: str | None = None) -> tuple[str, list[str], list[str]]:
    """``(model, features present, features missing)`` of this CPU from ``/proc/cpuinfo`` (or its text).

    The features are the vector units that matter to TensorFlow's and tfopt's kernels: x86 ``sse4_2 avx avx2
    fma avx512f avx512fp16 amx`` (``amx`` for any of ``amx_tile amx_bf16 amx_int8``), ARM ``neon asimd sve``.
    Without /proc/cpuinfo, the model is ``platform.processor()`` and the features are unknown (both lists empty).
    """
    import platform

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    model = (fields.get("model name") or fields.get("hardware") or fields.get("model")
             or platform.processor() or platform.machine() or "unknown")
    if "flags" in fields:
        wanted, flags = X86_FEATURES, set(fields["flags"].split())
    elif "features" in fields:
        wanted, flags = ARM_FEATURES, set(fields["features"].split())
    else:
        return model, [], []
    present = [f for f in wanted if flags & set(_CPUINFO_NAMES.get(f, (f,)))]
    return model, present, [f for f in wanted if f not in present]


def compiler_version() -> tuple[str, str]:
    """``($CXX or g++, the first line of its --version or "not found")``."""
    name = os.environ.get("CXX") or "g++"
    command = shlex.split(name)
    if not command or shutil.which(command[0]) is None:
        return name, "not found"
    try:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return name, f"not usable ({error})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return name, lines[0] if lines else f"no version (exit status {done.returncode})"


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception as error:  # noqa: BLE001  (a broken install is what doctor is for)
        return f"NOT importable: {' '.join(str(error).split()) or type(error).__name__}"


def _tail(path: str | None, lines: int = 20) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-lines:]
    except (OSError, TypeError):
        return []


def _native_diagnostics() -> dict:
    """``native.load()`` (building if needed) then ``native.diagnostics()`` (``tfopt.kernels.native``); its warning
    is kept."""
    import warnings

    from tfopt.kernels import native

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        library = native.load()
    diagnostics = getattr(native, "diagnostics", None)
    if diagnostics is not None:
        return diagnostics()
    enabled = os.environ.get("TFOPT_NATIVE", "1").lower() not in ("0", "false", "no", "off")  # (older native.py)
    error = None if library is not None else (str(caught[-1].message) if caught else "turned off by TFOPT_NATIVE=0")
    return dict(enabled=enabled, loaded=library is not None, library=None, flags=None, compiler=None,
                compiler_version=None, cache_dir=None, log=None, error=error)


def _doctor(args) -> int:
    import platform


    def row(label, value):
        print(f"{label:<{_WIDTH}}{value}", flush=True)

    print("tfopt doctor", flush=True)
    row("tfopt", f"{tfopt.__version__} ({os.path.dirname(os.path.abspath(tfopt.__file__))})")
    row("Python", f"{platform.python_version()} ({platform.python_implementation()}, {sys.executable})")
    try:
        _start_tensorflow()
    except Exception:  # noqa: BLE001  (reported on the next line)
        pass
    for label, module in (("TensorFlow", "tensorflow"), ("Keras", "keras"), ("NumPy", "numpy")):
        row(label, _version(module))
    row("platform", f"{platform.platform()} ({platform.machine()})")
    if "tensorflow" in sys.modules:
        gpus = [d.name for d in sys.modules["tensorflow"].config.list_physical_devices("GPU")]
        row("GPUs", ", ".join(gpus) or "none")
    model, present, missing = cpu_info()
    row("CPU", f"{model}, {os.cpu_count()} logical cores")
    if present or missing:
        row("CPU features", " ".join(present) + (f"   (not: {' '.join(missing)})" if missing else ""))
    else:
        row("CPU features", "unknown (no /proc/cpuinfo)")
    row("C++ compiler", "{}: {}".format(*compiler_version()))
    settings = [f"{name}={shlex.quote(os.environ[name])}" for name in _DOCTOR_ENV if name in os.environ]
    row("environment", " ".join(settings) or "(none of the tfopt and TensorFlow settings)")

    if "tensorflow" not in sys.modules:
        row("native kernels", "NOT loaded: TensorFlow cannot be imported")
        return 1
    found = _native_diagnostics()
    if found.get("loaded"):
        row("native kernels", f"loaded: {found.get('library') or '(library path unknown)'}")
        if found.get("flags") is not None:
            row("  flags", " ".join(found["flags"]) or "(none)")
    elif not found.get("enabled", True):
        row("native kernels", f"disabled: {found.get('error') or 'turned off by TFOPT_NATIVE=0'}")
    else:
        row("native kernels", f"NOT loaded: {found.get('error') or 'no reason given'}")
    if found.get("compiler"):
        row("  compiler", f"{found['compiler']}" + (f": {found['compiler_version']}"
                                                     if found.get("compiler_version") else ""))
    if found.get("cache_dir"):
        row("  cache", found["cache_dir"])
    for note in found.get("notes") or ():
        row("  note", note)
    if found.get("log"):
        row("  full log", found["log"])
        tail = _tail(found["log"])
        if tail:
            print(f"  last {len(tail)} lines of the log:")
            print("\n".join(f"    | {line}" for line in tail), flush=True)
    if found.get("loaded"):
        return 0
    print("tfopt runs TensorFlow's own kernels instead: the same numbers, slower.")
    return 1
