"""The ``landscape`` command line: ``demo``, ``analyze`` and ``show``.

Argument parsing and error reporting only; the work is done by the public API
(:func:`landscape.analyze`, :func:`landscape.compare`, :func:`landscape.load`) and
:mod:`landscape.demo`. Bad arguments, missing files, unimportable modules and checkpoints
that do not fit the architecture end with a one-line message on stderr and exit code 2
(no traceback); an error of the analysis itself (e.g. a NaN loss) exits with 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CLIError", "main"]

BUDGET_CHOICES = ("fast", "standard", "thorough")
DATA_CHOICES = ("digits", "mnist1d")

DESCRIPTION = """\
landscape: the loss surface around a PyTorch model, and what it means for training --
Hessian eigenvalues, traces, spectral densities, loss surfaces, sharpness and the largest
stable learning rates, computed exactly and without touching your model.

Run `landscape COMMAND --help` for the options of a command."""

EPILOG = """\
examples:
  landscape demo                                  # digits, about 30 s on 2 CPU cores
  landscape demo --quick --out /tmp/figures       # a smoke run, about 10 s
  landscape demo --data mnist1d --budget fast
  landscape analyze --model mypkg.models:make_mlp --data digits --out run.h5 --html run.html
  landscape analyze --model mypkg.models:make_mlp --checkpoint weights.pt \\
                    --data mypkg.data:train_loader --budget standard
  landscape analyze --model path/to/hf_model_dir --data mypkg.data:token_batches
  landscape analyze --model model.pt --allow-pickle --data mypkg.data:train_loader
  landscape show run.h5 --figures figures/run
  python -m landscape --help                      # the same, without the console script"""

MODEL_HELP = """\
the model: MODULE:FACTORY (a callable returning a torch.nn.Module, imported from a module
on the Python path or the current directory, or from a file: path/to/file.py:FACTORY;
called without arguments after torch.manual_seed(--seed)); a Hugging Face model directory
written by save_pretrained (its config's architecture from transformers, local files only,
no code from the directory); or a file saved with torch.save(model), which only loads with
--allow-pickle (unpickling a whole model runs code the file names)"""

DATA_HELP = """\
the data: 'digits' (sklearn's 8x8 digits, 64 features) or 'mnist1d' (MNIST-1D generated
locally, 40 features) -- training split, needs the data extra -- or MODULE:FACTORY /
path/to/file.py:FACTORY returning a re-iterable of batches (a DataLoader, a list of
(inputs, targets) tuples, ...)"""

CHECKPOINT_HELP = """\
a state_dict (torch.save(model.state_dict())) loaded into the model from --model
MODULE:FACTORY; dicts with a 'state_dict', 'model_state_dict' or 'model' entry and
DataParallel 'module.' prefixes are unwrapped; or a .safetensors file. Read with
torch.load(weights_only=True): a file holding other Python objects is refused unless
--allow-pickle is given"""

ALLOW_PICKLE_HELP = """\
let torch.load unpickle arbitrary objects (weights_only=False) for --model and --checkpoint
files: unpickling runs code named by the file, so give this only for files you trust"""


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""


# -- parsing ----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="landscape", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    from landscape import __version__

    parser.add_argument("--version", action="version", version=f"landscape {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", help="one of:"
    )

    _add_demo(commands, formatter)
    _add_analyze(commands, formatter)
    _add_show(commands, formatter)
    return parser


def _add_demo(commands: Any, formatter: type) -> None:
    demo = commands.add_parser(
        "demo",
        help="train one small MLP with SGD and with Adam on offline data, compare the two "
        "minima, write figures, an HTML report and an HDF5 file",
        description=(
            "Train a small MLP from ONE initialization twice, with SGD (momentum 0.9) and with\n"
            "Adam, on offline data; analyze both minima (landscape.compare, each model with its\n"
            "own optimizer) and write the figures demo_*.png, the page demo_report.html and\n"
            "the file demo_comparison.h5 into --out."
        ),
        epilog=(
            "examples:\n  landscape demo\n  landscape demo --quick --out /tmp/figures\n"
            "  landscape demo --data mnist1d --budget fast"
        ),
        formatter_class=formatter,
    )
    demo.add_argument(
        "--out", default="figures", metavar="DIR", help="output directory (default: figures)"
    )
    demo.add_argument(
        "--data", choices=DATA_CHOICES, default="digits", help="dataset (default: digits)"
    )
    demo.add_argument(
        "--budget",
        choices=BUDGET_CHOICES,
        default=None,
        help="analysis budget (default: standard; fast with --quick)",
    )
    demo.add_argument(
        "--quick", action="store_true", help="smaller model, 384 samples, fast budget (<1 min)"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of everything (default: 0)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_analyze(commands: Any, formatter: type) -> None:
    analyze = commands.add_parser(
        "analyze",
        help="analyze your model (a factory, or a saved model or state_dict) on built-in "
        "or your own data",
        description=(
            "Run landscape.analyze on a model and data: Hessian eigenvalues, trace, spectral\n"
            "density, per-layer curvature, loss surfaces, sharpness, gradient coherence and the\n"
            "largest stable learning rates. Prints the summary; --out saves it (HDF5), --html\n"
            "writes a page with every figure."
        ),
        epilog=(
            "examples:\n"
            "  landscape analyze --model mypkg.models:make_mlp --data digits --out run.h5\n"
            "  landscape analyze --model models.py:make_mlp --checkpoint weights.pt "
            "--data loaders.py:train\n"
            "  landscape analyze --model hf_model_dir --data tokens.py:batches\n"
            "  landscape analyze --model model.pt --allow-pickle --data digits --html run.html"
        ),
        formatter_class=formatter,
    )
    analyze.add_argument("--model", required=True, metavar="SPEC", help=MODEL_HELP)
    analyze.add_argument("--data", required=True, metavar="SPEC", help=DATA_HELP)
    analyze.add_argument("--checkpoint", metavar="PATH", help=CHECKPOINT_HELP)
    analyze.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)
    analyze.add_argument(
        "--budget",
        choices=BUDGET_CHOICES,
        default="fast",
        help="how much to compute (default: fast; see landscape.BUDGETS)",
    )
    analyze.add_argument("--out", metavar="FILE.h5", help="save the report to this HDF5 file")
    analyze.add_argument("--html", metavar="FILE.html", help="write an HTML page with figures")
    analyze.add_argument("--figures", metavar="DIR", help="write every figure as PNG here")
    analyze.add_argument("--seed", type=int, default=0, help="seed of everything (default: 0)")
    analyze.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="batch size of the built-in datasets (default: 64)",
    )
    analyze.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    analyze.add_argument("--no-surfaces", action="store_true", help="skip the loss surfaces")
    analyze.add_argument(
        "--no-learning-rates", action="store_true", help="skip the learning-rate analysis"
    )
    analyze.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_show(commands: Any, formatter: type) -> None:
    show = commands.add_parser(
        "show",
        help="print the summary of a saved report or comparison, optionally write its figures",
        description="Print the summary of a file written by analyze, compare or demo\n"
        "(landscape.load(path).summary()); --figures writes every figure as PNG.",
        epilog="examples:\n  landscape show run.h5\n"
        "  landscape show figures/demo_comparison.h5 --figures /tmp/demo_figures",
        formatter_class=formatter,
    )
    show.add_argument("path", metavar="FILE.h5", help="a report or comparison file")
    show.add_argument("--figures", metavar="DIR", help="write every figure as PNG here")


# -- helpers ----------------------------------------------------------------------------------
def _import_attribute(spec: str, what: str) -> Any:
    """Resolve ``module:attribute`` or ``path/to/file.py:attribute``.

    Returns
    -------
    object
        The attribute.

    Raises
    ------
    CLIError
        If the spec is malformed, the module cannot be imported or lacks the attribute.
    """
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise CLIError(f"{what} {spec!r} is not of the form MODULE:NAME (or file.py:NAME).")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise CLIError(f"{what} {spec!r}: no such file {module_name!r}.")
        name = f"_landscape_cli_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise CLIError(f"{what} {spec!r}: cannot import {module_name!r}.")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))  # its own sibling imports
        try:
            module_spec.loader.exec_module(module)
        except Exception as error:
            raise CLIError(
                f"{what} {spec!r}: importing {module_name!r} failed: "
                f"{type(error).__name__}: {error}"
            ) from error
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())  # like `python -m`: the current directory
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            raise CLIError(
                f"{what} {spec!r}: cannot import module {module_name!r} ({error}); is it on "
                "the Python path or in the current directory?"
            ) from error
        except Exception as error:
            raise CLIError(
                f"{what} {spec!r}: importing {module_name!r} failed: "
                f"{type(error).__name__}: {error}"
            ) from error
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise CLIError(f"{what} {spec!r}: module {module_name!r} has no {attribute!r}.") from None


def _call_factory(spec: str, what: str) -> Any:
    factory = _import_attribute(spec, what)
    if not callable(factory):
        raise CLIError(f"{what} {spec!r} is not callable (it is of type {type(factory).__name__}).")
    try:
        return factory()
    except Exception as error:
        raise CLIError(
            f"{what} {spec!r}: calling it failed: {type(error).__name__}: {error}"
        ) from error


def _read(path: Path, allow_pickle: bool) -> Any:
    """Read a checkpoint file through :mod:`landscape.checkpoints` (no code runs by default).

    Returns
    -------
    object
        What the file holds.

    Raises
    ------
    CLIError
        If the file is missing, unreadable, or needs unpickling without ``--allow-pickle``.
    """
    from landscape.checkpoints import UnsafeCheckpointError, load_object

    try:
        return load_object(path, allow_pickle=allow_pickle)
    except FileNotFoundError as error:
        raise CLIError(str(error)) from error
    except UnsafeCheckpointError as error:
        raise CLIError(str(error)) from error
    except Exception as error:
        hint = " (is it a file written by torch.save or safetensors?)"
        if isinstance(error, (ModuleNotFoundError, AttributeError)):
            hint = (
                " (a whole saved model needs its class importable: run from its project "
                "directory or set PYTHONPATH)"
            )
        raise CLIError(
            f"cannot load {str(path)!r}: {type(error).__name__}: {error}{hint}"
        ) from error


def _load_weights(model: Any, checkpoint: str, allow_pickle: bool) -> None:
    from landscape.checkpoints import unwrap_state_dict

    path = Path(checkpoint)
    try:
        state = unwrap_state_dict(_read(path, allow_pickle))
    except TypeError as error:
        raise CLIError(f"checkpoint {str(path)!r}: {error}") from error
    expected = model.state_dict()
    prefix = "module."
    if (
        state
        and all(k.startswith(prefix) for k in state)
        and not any(k.startswith(prefix) for k in expected)
    ):
        state = {k[len(prefix) :]: v for k, v in state.items()}  # saved from DataParallel
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): " + "; ".join(shapes[:3]))
        if missing:
            parts.append(f"missing from the checkpoint ({len(missing)}): {missing[:5]}")
        if unexpected:
            parts.append(f"not in the model ({len(unexpected)}): {unexpected[:5]}")
        raise CLIError(
            f"checkpoint {str(path)!r} does not match the model's architecture: "
            + "; ".join(parts)
            + "."
        )
    model.load_state_dict(state)


def _model(args: argparse.Namespace) -> Any:
    import torch
    from torch import nn

    from landscape.checkpoints import is_pretrained_directory, load_pretrained

    spec = args.model
    path = Path(spec)
    if is_pretrained_directory(path):
        try:
            model = load_pretrained(path)
        except (ImportError, ValueError, OSError) as error:
            raise CLIError(f"--model {spec!r}: {error}") from error
    elif path.is_dir():
        raise CLIError(
            f"--model {spec!r} is a directory without a config.json: not a Hugging Face "
            "save_pretrained directory."
        )
    elif path.suffix in (".pt", ".pth", ".bin", ".ckpt", ".safetensors") or path.is_file():
        if not path.is_file():
            raise CLIError(f"--model {spec!r}: no such file.")
        if path.suffix == ".safetensors":
            raise CLIError(
                f"--model {spec!r} holds weights, not an architecture: give the architecture "
                f"with --model MODULE:FACTORY and this file with --checkpoint {spec}."
            )
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # the saved model's class is imported by name
        model = _read(path, args.allow_pickle)
        if isinstance(model, dict):
            raise CLIError(
                f"--model {spec!r} holds a state_dict, not a model: give the architecture "
                f"with --model MODULE:FACTORY and this file with --checkpoint {spec}."
            )
        if not isinstance(model, nn.Module):
            raise CLIError(f"--model {spec!r} holds a {type(model).__name__}, not an nn.Module.")
    else:
        torch.manual_seed(args.seed)
        model = _call_factory(spec, "--model")
        if not isinstance(model, nn.Module):
            raise CLIError(
                f"--model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module."
            )
    if args.checkpoint is not None:
        _load_weights(model, args.checkpoint, args.allow_pickle)
    try:
        model = model.to(args.device)
    except Exception as error:
        raise CLIError(f"--device {args.device!r}: {type(error).__name__}: {error}") from error
    model.eval()
    return model


def _data(args: argparse.Namespace) -> Any:
    from landscape import demo

    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be positive; got {args.batch_size}.")
    if args.data in DATA_CHOICES:
        train, _ = demo.load_data(args.data, args.batch_size)
        return train
    if ":" not in args.data:
        raise CLIError(
            f"--data {args.data!r}: expected one of {list(DATA_CHOICES)} or MODULE:FACTORY."
        )
    data = _call_factory(args.data, "--data")
    if hasattr(data, "__next__") and iter(data) is data:
        raise CLIError(
            f"--data {args.data!r} returned a one-shot iterator; return a re-iterable "
            "(a DataLoader or a list of batches)."
        )
    return data


def _problem(model: Any, data: Any, spec: str) -> Any:
    """Return the analysis' problem, after evaluating the loss on its first batch.

    A data/model mismatch is then a clear error, before the analysis starts.

    Returns
    -------
    landscape.Problem
        The problem.

    Raises
    ------
    CLIError
        If no batch can be read or the model and default loss cannot take it.
    """
    import torch

    from landscape.problem import Problem

    first = next(iter(model.parameters()), None)
    if first is None:
        raise CLIError("the model from --model has no parameters to analyze.")
    try:
        problem = Problem(model, data)
        batch = next(problem.with_data(max_batches=1, shard=False).batches()).data
    except Exception as error:
        raise CLIError(
            f"--data {spec!r}: cannot read a batch: {type(error).__name__}: {error}"
        ) from error
    try:
        with torch.no_grad(), problem.evaluation() as run:
            run.loss(batch)
    except Exception as error:
        tensors = batch if isinstance(batch, (tuple, list)) else [batch]
        shapes = [tuple(t.shape) for t in tensors if isinstance(t, torch.Tensor)]
        raise CLIError(
            f"the model cannot take a batch of --data {spec!r} (tensors {shapes}): "
            f"{type(error).__name__}: {error}"
        ) from error
    return problem


def _check_directory(option: str, value: str | None) -> None:
    if value is not None and Path(value).exists() and not Path(value).is_dir():
        raise CLIError(f"{option} {value!r} exists and is not a directory.")


def _print_files(files: Sequence[Any]) -> None:
    for path in files:
        print(f"  {path}")


# -- commands ---------------------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    from landscape.demo import run_demo

    _check_directory("--out", args.out)
    run_demo(
        args.out,
        data=args.data,
        budget=args.budget,
        quick=args.quick,
        seed=args.seed,
        progress=not args.no_progress,
    )
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    import landscape as ls
    from landscape.demo import save_figures

    for option in ("out", "html"):
        target = getattr(args, option)
        if target is not None and not Path(target).resolve().parent.is_dir():
            raise CLIError(f"--{option} {target!r}: the directory does not exist.")
    _check_directory("--figures", args.figures)
    model = _model(args)
    data = _data(args)
    problem = _problem(model, data, args.data)
    report = ls.analyze(
        problem,
        budget=args.budget,
        seed=args.seed,
        progress=not args.no_progress,
        surfaces=not args.no_surfaces,
        learning_rates=not args.no_learning_rates,
    )
    print(report.summary())
    written = []
    if args.out:
        written.append(report.save(args.out))
    if args.html:
        written.append(report.to_html(args.html))
    if args.figures:
        written += save_figures(report, args.figures)
    if written:
        print(f"\nwrote {len(written)} files:")
        _print_files(written)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    import landscape as ls
    from landscape.demo import save_figures

    try:
        document = ls.load(args.path)
    except (FileNotFoundError, PermissionError, IsADirectoryError, ValueError) as error:
        raise CLIError(str(error)) from error
    _check_directory("--figures", args.figures)
    print(document.summary())
    if args.figures:
        written = save_figures(document, args.figures)
        print(f"\nwrote {len(written)} figures to {args.figures}/:")
        _print_files(written)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``landscape`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 when the analysis fails, 2 for usage errors (bad
        arguments, missing files, unimportable modules, mismatched checkpoints), 130 when
        interrupted.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")  # files only: never open a window
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    command = {"demo": _cmd_demo, "analyze": _cmd_analyze, "show": _cmd_show}[args.command]
    from landscape.demo import MissingExtraError

    try:
        return command(args)
    except (CLIError, MissingExtraError) as error:
        print(f"landscape {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # the analysis refused the model or data (NaN loss, ...)
        print(f"landscape {args.command}: analysis failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"landscape {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
