"""Offline datasets, small models and a trainer for the demo, the examples and the CLI.

Everything here runs on a laptop CPU in seconds and never touches the network:

* :func:`digits_loaders` — scikit-learn's bundled 8x8 digits (1,797 images);
* :func:`mnist1d_loaders` — MNIST-1D (Greydanus 2020), *generated locally* with
  ``mnist1d.data.make_dataset`` (its download path is never used);
* :func:`mlp` and :func:`cnn` — model factories;
* :func:`train` — a plain training loop with SGD (optionally momentum) or Adam;
* :func:`run_demo` — the ``landscape demo`` command: one initialization trained twice (SGD and
  Adam), compared with :func:`landscape.compare`, written to figures, HTML and HDF5.

The datasets need the ``data`` extra (``pip install 'landscape[data]'``: scikit-learn and
mnist1d), imported only when a loader is called.
"""

from __future__ import annotations

import copy
import importlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from landscape.analysis import evaluate

__all__ = [
    "DATASETS",
    "DemoResult",
    "MissingExtraError",
    "TrainResult",
    "TrainedPair",
    "accuracy",
    "cnn",
    "digits_loaders",
    "load_data",
    "mlp",
    "mnist1d_loaders",
    "run_demo",
    "save_figures",
    "train",
    "train_pair",
]


class MissingExtraError(ImportError):
    """A dataset needs a package of the ``data`` extra that is not installed."""


def _require(module: str, purpose: str) -> Any:
    """Import ``module`` or explain which extra to install.

    Returns
    -------
    module
        The imported module.

    Raises
    ------
    MissingExtraError
        If the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the package {module.split('.')[0]!r}, which is not installed; "
            "install the data extra: pip install 'landscape[data]'."
        ) from exc


def _split(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    test_fraction: float,
    num_samples: int | None,
    seed: int,
) -> tuple[DataLoader, DataLoader]:
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size!r}.")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    n_test = max(1, round(len(y) * test_fraction))
    x_test, y_test, x_train, y_train = x[:n_test], y[:n_test], x[n_test:], y[n_test:]
    if num_samples is not None:
        x_train, y_train = x_train[:num_samples], y_train[:num_samples]
    # Fixed order: analyses that use a prefix of the data (max_samples) see the same samples
    # on every pass. `train` shuffles with its own generator.
    train = DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=False)
    test = DataLoader(TensorDataset(x_test, y_test), batch_size=512, shuffle=False)
    return train, test


def digits_loaders(
    batch_size: int = 64,
    *,
    test_fraction: float = 0.2,
    num_samples: int | None = None,
    seed: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """Scikit-learn's 8x8 digits as flat 64-feature vectors in [0, 1] (bundled: no download).

    Parameters
    ----------
    batch_size : int, optional
        Batch size of the training loader.
    test_fraction : float, optional
        Fraction of the 1,797 images held out (a seeded random split).
    num_samples : int, optional
        Keep only the first training samples.
    seed : int, optional
        Seed of the split.

    Returns
    -------
    (DataLoader, DataLoader)
        Training and test loaders in a fixed order (``shuffle=False``) of
        ``(float32 (B, 64), int64 (B,))`` batches; :func:`cnn` reshapes to 8x8 itself.

    Examples
    --------
    >>> train, test = digits_loaders()
    >>> len(train.dataset), len(test.dataset)
    (1438, 359)
    """
    datasets = _require("sklearn.datasets", "the digits dataset")
    digits = datasets.load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    return _split(x, y, batch_size, test_fraction, num_samples, seed)


def mnist1d_loaders(
    batch_size: int = 64,
    *,
    test_fraction: float = 0.2,
    num_samples: int | None = None,
    seed: int = 0,
    generated: int = 4000,
    generator_seed: int = 42,
) -> tuple[DataLoader, DataLoader]:
    """MNIST-1D (Greydanus 2020): 40-sample 1-D signals of 10 classes, generated locally.

    Uses ``mnist1d.data.make_dataset`` with the package's default generation settings
    (``get_dataset_args``), ``generated`` samples and ``generator_seed``; the dataset's
    download URL is never used. The global numpy random state that ``make_dataset`` reseeds is
    restored afterwards.

    Parameters
    ----------
    batch_size : int, optional
        Batch size of the training loader.
    test_fraction : float, optional
        Fraction held out (a seeded random split).
    num_samples : int, optional
        Keep only the first training samples.
    seed : int, optional
        Seed of the split.
    generated : int, optional
        Samples generated in total (train + test).
    generator_seed : int, optional
        Seed of the generator (42 is the published dataset's).

    Returns
    -------
    (DataLoader, DataLoader)
        Training and test loaders of ``(float32 (B, 40), int64 (B,))`` batches.
    """
    data = _require("mnist1d.data", "the MNIST-1D dataset")
    args = data.get_dataset_args()
    args.num_samples = int(generated)
    args.seed = int(generator_seed)
    # make_dataset reseeds numpy's legacy global generator: put its state back afterwards.
    state = np.random.get_state()  # noqa: NPY002
    try:
        ds = data.make_dataset(args)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    x = torch.tensor(np.concatenate([ds["x"], ds["x_test"]]), dtype=torch.float32)
    y = torch.tensor(np.concatenate([ds["y"], ds["y_test"]]), dtype=torch.long)
    return _split(x, y, batch_size, test_fraction, num_samples, seed)


#: Dataset name -> (loader factory, input features).
DATASETS: dict[str, tuple[Callable[..., tuple[DataLoader, DataLoader]], int]] = {
    "digits": (digits_loaders, 64),
    "mnist1d": (mnist1d_loaders, 40),
}


def load_data(name: str, batch_size: int = 64, **options: Any) -> tuple[DataLoader, DataLoader]:
    """Return the training and test loaders of a built-in dataset by name.

    Parameters
    ----------
    name : {"digits", "mnist1d"}
        The dataset.
    batch_size : int, optional
        Training batch size.
    **options
        Passed to the loader factory.

    Returns
    -------
    (DataLoader, DataLoader)
        Training and test loaders.

    Raises
    ------
    ValueError
        For an unknown name.
    """
    factory, _ = _dataset(name)
    return factory(batch_size, **options)


def _dataset(name: str) -> tuple[Callable[..., tuple[DataLoader, DataLoader]], int]:
    """Return a built-in dataset's loader factory and input features.

    Returns
    -------
    tuple of (callable, int)
        ``DATASETS[name]``.

    Raises
    ------
    ValueError
        For an unknown name, naming the known ones.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
    return DATASETS[name]


def mlp(
    input_dim: int = 64,
    hidden: Sequence[int] = (64,),
    num_classes: int = 10,
    activation: type[nn.Module] = nn.Tanh,
) -> nn.Sequential:
    """Return a fully connected classifier ``input_dim - hidden... - num_classes``.

    Parameters
    ----------
    input_dim : int, optional
        Input features (64 for digits, 40 for MNIST-1D).
    hidden : sequence of int, optional
        Widths of the hidden layers.
    num_classes : int, optional
        Outputs (logits).
    activation : type of nn.Module, optional
        Nonlinearity after every hidden layer.

    Returns
    -------
    torch.nn.Sequential
        The model (initialized from torch's global generator: seed it first).

    Examples
    --------
    >>> mlp(64, (32,), 10)
    Sequential(
      (0): Linear(in_features=64, out_features=32, bias=True)
      (1): Tanh()
      (2): Linear(in_features=32, out_features=10, bias=True)
    )
    """
    layers: list[nn.Module] = []
    width = input_dim
    for h in hidden:
        layers += [nn.Linear(width, h), activation()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def cnn(
    image_size: int = 8,
    channels: Sequence[int] = (8, 16),
    hidden: int = 32,
    num_classes: int = 10,
    *,
    batchnorm: bool = False,
) -> nn.Sequential:
    """Return a small CNN for flat square images (e.g. digits' 64 features as 1x8x8).

    ``image`` (reshape) ``-> [conv{i} (3x3) -> (bn{i}) -> relu{i}] x len(channels) -> pool
    (max 2x2) -> flatten -> fc1 -> relu -> fc2``, with these module names.

    Parameters
    ----------
    image_size : int, optional
        Side of the square single-channel image (8 for digits).
    channels : sequence of int, optional
        Output channels of the convolutions.
    hidden : int, optional
        Width of the fully connected hidden layer.
    num_classes : int, optional
        Outputs.
    batchnorm : bool, optional
        Put a ``BatchNorm2d`` after every convolution.

    Returns
    -------
    torch.nn.Sequential
        The model; it takes ``(B, image_size**2)`` or ``(B, 1, image_size, image_size)``.

    Examples
    --------
    >>> model = cnn()
    >>> model(torch.zeros(2, 64)).shape
    torch.Size([2, 10])
    """
    layers: dict[str, nn.Module] = {"image": _Image(image_size)}
    width = 1
    for i, c in enumerate(channels, 1):
        layers[f"conv{i}"] = nn.Conv2d(width, c, 3, padding=1)
        if batchnorm:
            layers[f"bn{i}"] = nn.BatchNorm2d(c)
        layers[f"relu{i}"] = nn.ReLU()
        width = c
    side = image_size // 2
    layers["pool"] = nn.MaxPool2d(2)
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(width * side * side, hidden)
    layers[f"relu{len(channels) + 1}"] = nn.ReLU()
    layers["fc2"] = nn.Linear(hidden, num_classes)
    return nn.Sequential(OrderedDict(layers))


class _Image(nn.Module):
    """Reshape flat ``(B, s*s)`` inputs to ``(B, 1, s, s)`` images (images pass through)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return x
        return x.reshape(x.shape[0], 1, self.size, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes
    ----------
    model : torch.nn.Module
        The trained model (the one passed in, trained in place).
    optimizer : torch.optim.Optimizer
        The optimizer with its final state (e.g. Adam's moments, for
        :func:`landscape.max_learning_rate` and :func:`landscape.analyze`).
    losses : list of float
        Mean training loss of every epoch.
    seconds : float
        Wall time.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _make_optimizer(
    name: str | torch.optim.Optimizer,
    model: nn.Module,
    lr: float | None,
    momentum: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    if isinstance(name, torch.optim.Optimizer):
        return name
    kind = name.lower()
    params = model.parameters()
    if kind == "sgd":
        return torch.optim.SGD(
            params, lr=0.1 if lr is None else lr, momentum=momentum, weight_decay=weight_decay
        )
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-3 if lr is None else lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or a torch optimizer; got {name!r}.")


def train(
    model: nn.Module,
    loader: Any,
    *,
    optimizer: str | torch.optim.Optimizer = "sgd",
    lr: float | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    epochs: int = 10,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
) -> TrainResult:
    """Train ``model`` in place for ``epochs`` epochs of mini-batch updates.

    A ``DataLoader`` over a dataset is reshuffled every epoch with a private generator seeded
    by ``seed`` (its batch size is kept, the global random state is not touched), so the
    same call gives the same model; any other iterable of ``(inputs, targets)`` batches is
    used in its own order.

    Parameters
    ----------
    model : torch.nn.Module
        The model, trained in place (left in eval mode).
    loader : DataLoader or iterable of (inputs, targets)
        The training data.
    optimizer : {"sgd", "adam"} or torch.optim.Optimizer, optional
        The update rule.
    lr : float, optional
        Learning rate (defaults: 0.1 for SGD, 1e-3 for Adam).
    momentum : float, optional
        Heavy-ball momentum of SGD.
    weight_decay : float, optional
        Coupled weight decay.
    epochs : int, optional
        Passes over the data.
    loss_fn : callable, optional
        Mean-reduced criterion (default: cross-entropy).
    seed : int, optional
        Seed of the shuffling.

    Returns
    -------
    TrainResult
        The model, its optimizer (with state) and the loss per epoch.

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> model = mlp(4, (8,), 3)
    >>> data = [(torch.randn(16, 4), torch.randint(0, 3, (16,)))]
    >>> result = train(model, data, optimizer="adam", lr=1e-2, epochs=20)
    >>> result.losses[-1] < result.losses[0]
    True
    """
    start = time.perf_counter()
    opt = _make_optimizer(optimizer, model, lr, momentum, weight_decay)
    criterion = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    dataset = getattr(loader, "dataset", None)
    size = getattr(loader, "batch_size", None)
    losses: list[float] = []
    model.train()
    for _ in range(epochs):
        if dataset is not None and isinstance(size, int):
            batches: Any = DataLoader(dataset, batch_size=size, shuffle=True, generator=generator)
        else:
            batches = loader
        total, count = 0.0, 0
        for inputs, targets in batches:
            opt.zero_grad()
            loss = criterion(model(inputs), targets)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(targets)
            count += len(targets)
        losses.append(total / max(count, 1))
    opt.zero_grad()
    model.eval()
    return TrainResult(model, opt, losses, time.perf_counter() - start)


def accuracy(model: nn.Module, loader: Any) -> tuple[float, float]:
    """Return the mean cross-entropy and the accuracy of ``model`` on ``loader``.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier (evaluated in eval mode; its flags are restored).
    loader : iterable of (inputs, targets)
        The data.

    Returns
    -------
    (float, float)
        Mean loss and fraction correct.
    """
    result = evaluate(model, loader, nn.CrossEntropyLoss())
    return float(result["value"]), float(result["accuracy"] or 0.0)


# -- the demo -------------------------------------------------------------------------------------
@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes
    ----------
    comparison : landscape.report.document.Comparison
        ``compare({"SGD": ..., "Adam": ...})``.
    models : dict of str to torch.nn.Module
        The two trained models.
    optimizers : dict of str to torch.optim.Optimizer
        Their optimizers (with state).
    test : dict of str to (float, float)
        Test loss and accuracy per model.
    files : list of Path
        Everything written.
    seconds : dict of str to float
        Wall time of training, analysis and writing.
    """

    comparison: Any
    models: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    test: dict[str, tuple[float, float]]
    files: list[Path]
    seconds: dict[str, float]


#: Demo settings per (dataset, quick): MLP widths and activation, epochs, training samples
#: (None: all), batch size.
_DEMO: dict[tuple[str, bool], dict[str, Any]] = {
    ("digits", False): {"hidden": (64,), "activation": nn.Tanh, "epochs": 40, "num_samples": None},
    ("digits", True): {"hidden": (32,), "activation": nn.Tanh, "epochs": 15, "num_samples": 384},
    ("mnist1d", False): {
        "hidden": (100, 100),
        "activation": nn.ReLU,
        "epochs": 40,
        "num_samples": None,
    },
    ("mnist1d", True): {"hidden": (32,), "activation": nn.ReLU, "epochs": 15, "num_samples": 384},
}
_BATCH_SIZE = 64
_SGD = {"lr": 0.05, "momentum": 0.9}
_ADAM = {"lr": 2e-3}


@dataclass
class TrainedPair:
    """Two models trained from one initialization (see :func:`train_pair`).

    Attributes
    ----------
    models : dict of str to torch.nn.Module
        ``{"SGD": ..., "Adam": ...}``, trained.
    optimizers : dict of str to torch.optim.Optimizer
        Their optimizers, with state.
    initial : torch.nn.Module
        The common initialization (untrained).
    train, test : DataLoader
        The training data (fixed order) and the held-out data.
    """

    models: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    initial: nn.Module
    train: DataLoader
    test: DataLoader


def train_pair(
    data: str = "digits",
    *,
    quick: bool = False,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> TrainedPair:
    """Train one initialization twice, with SGD (momentum 0.9) and with Adam.

    Both runs use the same initialization and the same batch order; the hyperparameters are
    the demo's (SGD lr 0.05, momentum 0.9; Adam lr 2e-3; batch size 64).

    Parameters
    ----------
    data : {"digits", "mnist1d"}, optional
        The dataset.
    quick : bool, optional
        A smaller model, fewer samples and epochs (a smoke test).
    seed : int, optional
        Seed of the initialization and of the shuffling (the same for both runs).
    log : callable, optional
        Where progress lines go.

    Returns
    -------
    TrainedPair
        Models and optimizers keyed ``"SGD"`` and ``"Adam"``, the initialization, and the
        train and test loaders.

    Raises
    ------
    ValueError
        For an unknown dataset.
    """
    _, features = _dataset(data)
    settings = _DEMO[data, bool(quick)]
    train_loader, test_loader = load_data(data, _BATCH_SIZE, num_samples=settings["num_samples"])
    torch.manual_seed(seed)
    initial = mlp(features, settings["hidden"], 10, settings["activation"])
    models: dict[str, nn.Module] = {}
    optimizers: dict[str, torch.optim.Optimizer] = {}
    for name, kind, hyper in (("SGD", "sgd", _SGD), ("Adam", "adam", _ADAM)):
        model = copy.deepcopy(initial)
        result = train(
            model, train_loader, optimizer=kind, epochs=settings["epochs"], seed=seed, **hyper
        )
        loss, acc = accuracy(model, test_loader)
        log(
            f"trained {name:<4} ({_describe(result.optimizer)}, {settings['epochs']} epochs, "
            f"{result.seconds:.1f} s): train loss {result.losses[-1]:.4f}, "
            f"test loss {loss:.4f}, test accuracy {acc:.1%}"
        )
        models[name], optimizers[name] = model, result.optimizer
    return TrainedPair(models, optimizers, initial, train_loader, test_loader)


def _describe(optimizer: torch.optim.Optimizer) -> str:
    group = optimizer.param_groups[0]
    if isinstance(optimizer, torch.optim.Adam):
        return f"Adam lr={group['lr']:g}"
    momentum = group.get("momentum", 0.0)
    return f"SGD lr={group['lr']:g}" + (f", momentum {momentum:g}" if momentum else "")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name.lower()) or "model"


def save_figures(
    document: Any, directory: str | Path, prefix: str = "", *, reports: bool = True
) -> list[Path]:
    """Write every figure of a report or comparison as PNG files.

    A :class:`~landscape.report.document.Report` gives ``{prefix}{kind}.png`` for each of its
    :meth:`~landscape.report.document.Report.plot_kinds`; a
    :class:`~landscape.report.document.Comparison` gives its own figures and, with
    ``reports``, each model's as ``{prefix}{model}_{kind}.png``. Figures are drawn and
    written one at a time.

    Parameters
    ----------
    document : Report or Comparison
        What to draw.
    directory : str or Path
        Where to write (created if needed).
    prefix : str, optional
        Prefix of the file names.
    reports : bool, optional
        For a comparison, also write each model's figures.

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    docs = [(prefix, document)]
    if reports and hasattr(document, "reports"):
        docs += [(f"{prefix}{_slug(n)}_", r) for n, r in document.reports.items()]
    for stem, doc in docs:
        for kind in doc.plot_kinds():
            fig = doc.plot(kind)
            path = out / f"{stem}{kind}.png"
            fig.savefig(path, dpi=110)
            fig.clear()  # free the drawing (pyplot keeps only an empty figure)
            written.append(path)
    return written


def run_demo(
    out: str | Path = "figures",
    *,
    data: str = "digits",
    budget: str | None = None,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Train one initialization with SGD and with Adam, compare the two minima, write files.

    The ``landscape demo`` command. Trains an MLP on ``data`` from one initialization twice
    (SGD with momentum 0.9 and Adam, same seed and batch order), runs
    :func:`landscape.compare` on both with each model's optimizer (so each model gets
    :func:`landscape.analyze` with its own optimizer state for the learning-rate analysis),
    prints the summary, and writes into ``out``: the comparison's figures
    ``demo_<kind>.png``, each model's eigenvalue, per-layer and 1-D surface figures
    ``demo_<model>_<kind>.png``, the page ``demo_report.html`` and the file
    ``demo_comparison.h5`` (``landscape show`` / :func:`landscape.load` read it back).

    Parameters
    ----------
    out : str or Path, optional
        Output directory (created if needed).
    data : {"digits", "mnist1d"}, optional
        The dataset (both offline).
    budget : {"fast", "standard", "thorough"}, optional
        Analysis budget (default: ``"fast"`` with ``quick``, else ``"standard"``).
    quick : bool, optional
        A smaller model on 384 samples, fewer epochs (well under a minute).
    seed : int, optional
        Seed of the initialization, the batch order and the analysis.
    progress : bool, optional
        Show progress bars.
    log : callable, optional
        Where the printed lines go.

    Returns
    -------
    DemoResult
        The comparison, models, optimizers, test metrics, files and timings.
    """
    from landscape.analysis import compare

    budget = budget or ("fast" if quick else "standard")
    out = Path(out)
    times: dict[str, float] = {}
    start = time.perf_counter()
    pair = train_pair(data, quick=quick, seed=seed, log=log)
    models, optimizers, train_loader = pair.models, pair.optimizers, pair.train
    test = {name: accuracy(model, pair.test) for name, model in models.items()}
    times["training"] = time.perf_counter() - start

    start = time.perf_counter()
    log(
        f"analyzing both minima on the {len(train_loader.dataset)} training samples "  # type: ignore[arg-type]
        f"(budget {budget!r})..."
    )
    comparison = compare(
        models, train_loader, budget=budget, optimizers=optimizers, seed=seed, progress=progress
    )
    times["analysis"] = time.perf_counter() - start

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    files = save_figures(comparison, out, "demo_", reports=False)
    for name, report in comparison.reports.items():
        for kind in ("eigenvalues", "layerwise", "surface_1d"):
            if kind in report.plot_kinds():
                fig = report.plot(kind)
                path = out / f"demo_{_slug(name)}_{kind}.png"
                fig.savefig(path, dpi=110)
                fig.clear()
                files.append(path)
    files.append(Path(comparison.to_html(out / "demo_report.html")))
    files.append(Path(comparison.save(out / "demo_comparison.h5")))
    times["writing"] = time.perf_counter() - start

    log("")
    log(comparison.summary())
    log("")
    log("test set: " + ", ".join(f"{n} accuracy {a:.1%}" for n, (_, a) in test.items()))
    log(
        f"time: training {times['training']:.1f} s, analysis {times['analysis']:.1f} s, "
        f"figures and files {times['writing']:.1f} s"
    )
    log(f"wrote {len(files)} files to {out}/:")
    for path in files:
        log(f"  {path}")
    log(
        f"open {out / 'demo_report.html'} in a browser; `landscape show "
        f"{out / 'demo_comparison.h5'}` prints the summary again."
    )
    return DemoResult(comparison, models, optimizers, test, files, times)
