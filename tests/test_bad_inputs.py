"""The bad-input matrix: every public entry point fails fast with an exception naming the problem.

tests/test_errors.py covers the curvature operators (``ls.hessian`` / ``gauss_newton`` /
``fisher`` and their ``matvec``/``matmat``); the module tests cover their own options
(test_eigen, test_trace, test_density, test_learning_rate, test_sharpness, test_coherence,
test_tracker, test_surfaces, test_surfaces_resume, test_documents). This file extends the same
bad inputs to the newer entry points (``analyze``, ``compare``, ``evaluate``,
``max_learning_rate``, ``sharpness``, ``coherence``, ``layerwise``, ``SharpnessTracker``,
``surface``, ``interpolate``, ``load``, ``Report.save``) and checks that a failing call
leaves no half-written file.

=====================================  ===================  ==================================
bad input                              exception            message contains
=====================================  ===================  ==================================
empty loader / list                    ValueError           "data is empty"
no trainable parameters                ValueError           "no trainable parameters"
model without any parameter            ValueError           "has no parameters"
not an nn.Module                       TypeError            "must be a torch.nn.Module"
NaN loss                               FloatingPointError   "at batch 1 (0-based) ... nan"
inf loss                               FloatingPointError   "at batch 2 (0-based) ... inf"
non-scalar loss                        ValueError           "must be a scalar"
sum-/none-reduced criterion            ValueError           "MEAN loss"
H @ v: wrong shape / dtype / device    ValueError/TypeError "shape (P,)", "dtype", "device"
compare: not a mapping / 1 model       TypeError/ValueError "mapping of names", "2 to 4"
compare / interpolate: architectures   ValueError           "same architecture" / "different
                                                            architecture"
load: empty, random bytes, directory,  ValueError           "not a landscape report", "corrupt",
flipped bytes, foreign format, no                           "not a readable"
version / kind / data group
surface resume, other max_samples      ValueError           "different settings"
k > P (eigenvalues, tracker, dirs)     ValueError           "at most 66"
batch size <= 0, fractional, unknown   ValueError/TypeError "must be positive", "positive
                                                            integers or 'full'"
unknown option strings                 ValueError           the option name and valid values
seed not an int (analyze)              TypeError            "seed must be an int"
output path in a missing directory,    FileNotFoundError,   "does not exist", "is a directory"
or a directory                         IsADirectoryError
=====================================  ===================  ==================================
"""

import os
import warnings

import h5py
import numpy as np
import pytest
import torch
from cases import CASES
from torch import nn

import landscape as ls

P = 66  # parameters of CASES[0] (a 5-7-3 tanh MLP)
QUIET = {"progress": False}


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture
def problem():
    return CASES[0].build()


def _nan_batches(batches, index=1):
    X = batches[index][0].clone()
    X[0, 0] = float("nan")
    return [(X, y) if i == index else (x, y) for i, (x, y) in enumerate(batches)]


def _inf_loss(outputs, targets):  # +inf on the 3-sample batch (batch 2) only
    return nn.functional.cross_entropy(outputs, targets) / (targets.numel() != 3)


def _per_sample_loss(outputs, targets):
    return nn.functional.cross_entropy(outputs, targets, reduction="none")


def _other_model():
    return CASES[0].build(seed=3)[0]


def _dirs(model):
    return ls.random_directions(model, n=1, seed=0)


# -- the entry points, as calls of (model, data, loss_fn) ------------------------------------------
ENTRY_POINTS = {
    "analyze": lambda m, d, f=None: ls.analyze(m, d, f, **QUIET),
    "evaluate": lambda m, d, f=None: ls.evaluate(m, d, f),
    "compare": lambda m, d, f=None: ls.compare({"a": m, "b": _other_model()}, d, f, **QUIET),
    "max_learning_rate": lambda m, d, f=None: ls.max_learning_rate(m, d, f, batch_sizes=(8,)),
    "sharpness": lambda m, d, f=None: ls.sharpness(m, d, f),
    "coherence": lambda m, d, f=None: ls.coherence(m, d, f),
    "layerwise": lambda m, d, f=None: ls.layerwise(m, d, f),
    "SharpnessTracker": lambda m, d, f=None: ls.SharpnessTracker(m, d, f).measure("sgd", lr=0.1),
    "surface": lambda m, d, f=None: ls.surface(
        m, d, directions=_dirs(m), coords=[-1, 0, 1], loss_fn=f, **QUIET
    ),
    "interpolate": lambda m, d, f=None: ls.interpolate(m, _other_model(), d, loss_fn=f, **QUIET),
}


def _entry_points(*names):
    return [pytest.param(ENTRY_POINTS[n], id=n) for n in names]


# -- data and models -----------------------------------------------------------------------------
@pytest.mark.parametrize("call", _entry_points(*ENTRY_POINTS))
def test_empty_loader(problem, call):
    model, _ = problem
    empty = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    )
    for data in ([], empty):
        with pytest.raises(ValueError, match="data is empty"):
            call(model, data)


@pytest.mark.parametrize(
    "call",
    _entry_points("analyze", "max_learning_rate", "sharpness", "coherence", "layerwise")
    + _entry_points("SharpnessTracker"),
)
def test_no_trainable_parameters(problem, call):
    model, batches = problem
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="has no trainable parameters"):
        call(model, batches)


def test_no_trainable_parameters_for_surfaces(problem):
    model, batches = problem
    dirs = _dirs(model)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters to move along"):
        ls.random_directions(model)
    with pytest.raises(ValueError, match="no trainable parameters to move along"):
        ls.surface(model, batches, directions=dirs, coords=[-1, 0, 1], **QUIET)


def test_model_that_is_not_a_module_or_has_no_parameters(problem):
    _, batches = problem
    for call in (ls.analyze, ls.evaluate, ls.max_learning_rate, ls.sharpness, ls.coherence):
        with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module; got function"):
            call(lambda x: x, batches)
    with pytest.raises(ValueError, match="Tanh has no parameters"):
        ls.analyze(nn.Tanh(), batches, **QUIET)
    with pytest.raises(ValueError, match="Tanh has no parameters"):
        ls.evaluate(nn.Tanh(), batches)


# -- losses --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    _entry_points("analyze", "max_learning_rate", "sharpness", "layerwise", "SharpnessTracker"),
)
def test_nan_loss_names_the_batch(problem, call):
    model, batches = problem
    with pytest.raises(FloatingPointError, match=r"at batch 1 \(0-based\) of the data, .*nan"):
        call(model, _nan_batches(batches))


def test_nan_loss_in_coherence_names_the_sample(problem):
    model, batches = problem
    # per-example: the first sample of batch 1 is sample 10 of the data
    with pytest.raises(FloatingPointError, match=r"sample 10 \(0-based, in data order\) is nan"):
        ls.coherence(model, _nan_batches(batches))


@pytest.mark.parametrize(
    "call", _entry_points("analyze", "max_learning_rate", "sharpness", "SharpnessTracker")
)
def test_inf_loss_names_the_batch(problem, call):
    model, batches = problem
    with pytest.raises(FloatingPointError, match=r"at batch 2 \(0-based\) of the data, .*inf"):
        call(model, batches, _inf_loss)


@pytest.mark.parametrize(
    "call",
    _entry_points("analyze", "evaluate", "max_learning_rate", "sharpness", "coherence")
    + _entry_points("surface", "interpolate"),
)
def test_non_scalar_loss(problem, call):
    model, batches = problem
    with pytest.raises(ValueError, match=r"the loss must be a scalar \(the batch mean\)"):
        call(model, batches, _per_sample_loss)


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("call", _entry_points(*ENTRY_POINTS))
def test_sum_reduced_criterion(problem, call, reduction):
    model, batches = problem
    with pytest.raises(ValueError, match=rf"reduction='{reduction}'.*MEAN loss"):
        call(model, batches, nn.CrossEntropyLoss(reduction=reduction))


# -- vectors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["hessian", "gauss_newton", "fisher", "H+I", "2H"])
def test_matmul_with_a_wrong_vector(problem, kind):
    model, batches = problem
    H = ls.hessian(model, batches)
    op = {
        "hessian": H,
        "gauss_newton": ls.gauss_newton(model, batches),
        "fisher": ls.fisher(model, batches),
        "H+I": H + ls.IdentityOperator(P, dtype=torch.float64),
        "2H": H * 2.0,
    }[kind]
    with pytest.raises(ValueError, match=rf"shape \({P},\); got \({P + 1},\)"):
        op @ torch.zeros(P + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"shape \({P}, k\); got \({P}, 2, 2\)"):
        op @ torch.zeros(P, 2, 2, dtype=torch.float64)
    for dtype in (torch.float32, torch.int64):
        with pytest.raises(TypeError, match=rf"expected dtype torch.float64.*got {dtype}"):
            op @ torch.zeros(P, dtype=dtype)
    with pytest.raises(ValueError, match=r"expected a tensor on cpu.*got one on meta"):
        op @ torch.zeros(P, dtype=torch.float64, device="meta")
    with pytest.raises(TypeError, match=r"expected a torch.Tensor; got ndarray"):
        op @ np.zeros(P)
    assert H.num_matvecs == 0  # nothing was computed


# -- comparing models ----------------------------------------------------------------------------
class _Renamed(nn.Module):
    """The same layers as CASES[0]'s MLP under other parameter names."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))

    def forward(self, x):
        return self.body(x)


class _Wider(nn.Module):
    """The same parameter names as CASES[0]'s MLP with other shapes."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()

    def forward(self, x):
        return self.net(x)


def test_compare_needs_a_mapping_of_two_to_four_modules(problem):
    model, batches = problem
    with pytest.raises(TypeError, match=r"mapping of names to models.*got list"):
        ls.compare([model, _other_model()], batches, **QUIET)
    with pytest.raises(ValueError, match="2 to 4 models; got 5"):
        ls.compare({str(i): model for i in range(5)}, batches, **QUIET)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module; got str"):
        ls.compare({"a": model, "b": "checkpoint.pt"}, batches, **QUIET)


def test_compare_mismatched_architectures(problem):
    model, batches = problem
    with pytest.raises(ValueError, match=r"same architecture.*only in one: \['body\.0\.bias'"):
        ls.compare({"a": model, "b": _Renamed().double()}, batches, **QUIET)
    with pytest.raises(ValueError, match=r"same architecture.*shapes differ: \['net\.0\.bias'"):
        ls.compare({"a": model, "b": _Wider()}, batches, **QUIET)


def test_interpolate_and_plane_mismatched_architectures(problem):
    model, batches = problem
    for other in (_Renamed().double(), _Wider()):
        with pytest.raises(ValueError, match="model 2 has a different architecture"):
            ls.interpolate(model, other, batches, **QUIET)
        with pytest.raises(ValueError, match="model 3 has a different architecture"):
            ls.plane(model, _other_model(), other, batches, **QUIET)


# -- files ---------------------------------------------------------------------------------------
def _saved(tmp_path, name="good.h5"):
    path = tmp_path / name
    ls.Report(metadata={"x": {"a": np.ones(3)}}).save(path)
    return path


def _edit(path, edit):
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _overwrite(path, data):
    path.write_bytes(data)
    return path


def _flip_bytes(path):
    data = bytearray(path.read_bytes())
    for i in range(800, 1600):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


LOAD_CASES = {
    "zero-bytes": (lambda p: _overwrite(p, b""), "is not a landscape report: it is not an HDF5"),
    "random-bytes": (
        lambda p: _overwrite(p, np.random.default_rng(0).bytes(4096)),
        "it is not an HDF5 file",
    ),
    "flipped-bytes": (_flip_bytes, "is not a readable landscape report"),
    "no-version": (
        lambda p: _edit(p, lambda f: f.attrs.__delitem__("format_version")),
        "corrupt landscape report: no format_version",
    ),
    "unknown-kind": (
        lambda p: _edit(p, lambda f: f.attrs.__setitem__("kind", "poem")),
        "corrupt landscape report: unknown kind 'poem'",
    ),
    "no-data": (
        lambda p: _edit(p, lambda f: f.__delitem__("data")),
        "corrupt landscape report: no data group",
    ),
    "bad-encoding": (
        lambda p: _edit(p, lambda f: f["data/metadata/x"].attrs.__setitem__("@type", "bogus")),
        "data/metadata/x: unknown group type 'bogus'",
    ),
    "foreign-format": (
        lambda p: _edit(p, lambda f: f.attrs.__setitem__("format", "keras")),
        "not a landscape report: an HDF5 file with format 'keras'",
    ),
}


@pytest.mark.parametrize("damage", [pytest.param(v, id=k) for k, v in LOAD_CASES.items()])
def test_load_corrupt_and_foreign_files(tmp_path, damage):
    spoil, message = damage
    path = spoil(_saved(tmp_path))
    with pytest.raises(ValueError, match=message):
        ls.load(path)


def test_load_a_directory_or_a_surface_file(tmp_path, problem):
    with pytest.raises(ValueError, match="not a landscape report: it is not an HDF5 file"):
        ls.load(tmp_path)
    model, batches = problem
    path = tmp_path / "s.h5"
    ls.surface(model, batches, directions=_dirs(model), coords=[-1, 0, 1], path=path, **QUIET)
    with pytest.raises(ValueError, match=r"format 'landscape.surface', not 'landscape.report'"):
        ls.load(path)


def test_surface_resume_with_other_data_settings(tmp_path, problem):
    # other settings, model, directions and data: tests/test_surfaces_resume.py
    model, batches = problem
    path = tmp_path / "s.h5"
    dirs = _dirs(model)
    ls.surface(model, batches, directions=dirs, coords=[-1, 0, 1], path=path, **QUIET)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"made with different settings.*; refusing to resume"):
        ls.surface(
            model, batches, directions=dirs, coords=[-1, 0, 1], path=path, max_samples=20, **QUIET
        )
    assert path.read_bytes() == before


# -- sizes ---------------------------------------------------------------------------------------
def test_k_larger_than_the_number_of_parameters(problem):
    model, batches = problem
    H = ls.hessian(model, batches)
    with pytest.raises(ValueError, match=rf"k={P + 1} asks for {P + 1} .*at most {P} exist"):
        ls.eigenvalues(H, k=P + 1)
    with pytest.raises(ValueError, match=rf"k=40 asks for 80 eigenpairs .*at most {P} exist"):
        ls.eigenvalues(H, k=40, which="both")
    with pytest.raises(ValueError, match=rf"at most {P} exist"):
        ls.hessian_directions(model, batches, k=P + 1)
    with pytest.raises(ValueError, match=rf"k={P + 1} asks for {P + 1} eigenvalues .*{P} param"):
        ls.SharpnessTracker(model, batches, k=P + 1)  # at construction, not mid-training
    assert H.num_matvecs == 0


@pytest.mark.parametrize(
    ("sizes", "error", "message"),
    [
        ((0,), ValueError, "batch sizes must be positive; got 0"),
        ((8, -4), ValueError, "batch sizes must be positive; got -4"),
        ((0.5,), TypeError, "positive integers or 'full'; got 0.5"),
        (("all",), ValueError, "positive integers or 'full'; got 'all'"),
        ((), ValueError, "batch_sizes is empty"),
        ((1000,), ValueError, "batch size 1000 exceeds the 23 samples"),
    ],
)
def test_bad_batch_sizes_for_max_learning_rate(problem, sizes, error, message):
    model, batches = problem
    with pytest.raises(error, match=message):
        ls.max_learning_rate(model, batches, batch_sizes=sizes)


def test_bad_counts_for_max_learning_rate(problem):
    model, batches = problem
    with pytest.raises(ValueError, match="exact_samples must be a positive integer; got 0"):
        ls.max_learning_rate(model, batches, batch_sizes=(8,), exact_samples=0)
    with pytest.raises(ValueError, match="num_batches must be a positive integer; got 0"):
        ls.max_learning_rate(model, batches, batch_sizes=(8,), num_batches=0)


# -- option strings ------------------------------------------------------------------------------
def _unknown_options(model, batches):
    H = ls.hessian(model, batches)
    tracker = ls.SharpnessTracker(model, batches)
    return {
        "analyze budget": (
            lambda: ls.analyze(model, batches, budget="quick", **QUIET),
            r"budget must be one of \['fast', 'standard', 'thorough'\]; got 'quick'",
        ),
        "compare budget": (
            lambda: ls.compare({"a": model, "b": _other_model()}, batches, budget=3, **QUIET),
            r"budget must be one of .*; got 3",
        ),
        "eigenvalues which": (
            lambda: ls.eigenvalues(H, k=1, which="top"),
            r"which must be one of \('largest', 'smallest', 'both', 'magnitude'\); got 'top'",
        ),
        "trace method": (
            lambda: ls.trace(H, method="hutch"),
            "unknown trace method 'hutch'; expected one of 'hutchinson', 'hutch\\+\\+', 'xtrace'",
        ),
        "directions norm": (
            lambda: ls.random_directions(model, norm="filters"),
            "norm must be 'filter', 'layer', 'weight' or None; got 'filters'",
        ),
        "directions ignore": (
            lambda: ls.random_directions(model, ignore="bias"),
            "ignore must be 'biasbn' or None; got 'bias'",
        ),
        "surface bn": (
            lambda: ls.surface(
                model, batches, directions=_dirs(model), coords=[0, 1], bn="train", **QUIET
            ),
            "bn must be 'eval', 'recompute' or 'batch'; got 'train'",
        ),
        "surface metrics": (
            lambda: ls.surface(
                model, batches, directions=_dirs(model), coords=[0, 1], metrics=("acc",), **QUIET
            ),
            "metrics must include 'loss'",
        ),
        "max_learning_rate optimizer": (
            lambda: ls.max_learning_rate(model, batches, optimizer="adamw"),
            "unknown optimizer 'adamw'; expected one of sgd, momentum, nesterov, adam",
        ),
        "tracker optimizer": (
            lambda: tracker.measure("rmsprop", lr=0.1),
            "unknown optimizer 'rmsprop'",
        ),
        "tracker preconditioned": (
            lambda: ls.SharpnessTracker(model, batches, preconditioned="yes"),
            "preconditioned must be 'auto', True or False; got 'yes'",
        ),
        "sharpness measure": (
            lambda: ls.sharpness(model, batches, measures=("sam", "samm")),
            r"unknown sharpness measure\(s\) \['samm'\]; valid measures are \['lambda_max'",
        ),
        "coherence hessian_method": (
            lambda: ls.coherence(model, batches, hessian=ls.HessianSettings(method="approx")),
            "hessian_method must be 'probes' or 'exact'; got 'approx'",
        ),
        "layerwise metrics": (
            lambda: ls.layerwise(model, batches, metrics=("tr",)),
            r"unknown metrics \['tr'\]; choose from \('trace', 'top_eigenvalue'\)",
        ),
        "hessian mode": (
            lambda: ls.hessian(model, batches, mode="training"),
            "mode must be 'eval' or 'train'; got 'training'",
        ),
    }


OPTION_NAMES = [
    "analyze budget",
    "compare budget",
    "eigenvalues which",
    "trace method",
    "directions norm",
    "directions ignore",
    "surface bn",
    "surface metrics",
    "max_learning_rate optimizer",
    "tracker optimizer",
    "tracker preconditioned",
    "sharpness measure",
    "coherence hessian_method",
    "layerwise metrics",
    "hessian mode",
]


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_unknown_option_strings(problem, name):
    model, batches = problem
    call, message = _unknown_options(model, batches)[name]
    with pytest.raises(ValueError, match=message):
        call()


def test_seed_must_be_an_int(problem):
    model, batches = problem
    with pytest.raises(TypeError, match="seed must be an int; got str 'a'"):
        ls.analyze(model, batches, seed="a", **QUIET)
    with pytest.raises(TypeError, match="seed must be an int; got float"):
        ls.compare({"a": model, "b": _other_model()}, batches, seed=1.5, **QUIET)


# -- nothing half-written ------------------------------------------------------------------------
class _Untouchable:
    """Data that fails the test if anyone iterates it (the call must fail before)."""

    def __len__(self):
        return 1

    def __iter__(self):
        raise AssertionError("the data was read before the bad path was noticed")


def test_bad_output_paths_fail_before_any_work(problem, tmp_path):
    model, _ = problem
    missing = tmp_path / "no" / "such" / "dir" / "r.h5"
    untouchable = _Untouchable()
    with pytest.raises(FileNotFoundError, match=r"cannot write the report to .*does not exist"):
        ls.analyze(model, untouchable, path=missing, **QUIET)
    with pytest.raises(IsADirectoryError, match=r"cannot write the report to .*is a directory"):
        ls.analyze(model, untouchable, path=tmp_path, **QUIET)
    with pytest.raises(FileNotFoundError, match=r"cannot write the comparison to .*does not exist"):
        ls.compare({"a": model, "b": _other_model()}, untouchable, path=missing, **QUIET)
    report = ls.Report(metadata={"loss": 1.0})
    with pytest.raises(FileNotFoundError, match=r"cannot write the report to .*does not exist"):
        report.save(missing)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        report.save(tmp_path)
    with pytest.raises(TypeError, match=r"the report path must be a str or os.PathLike"):
        report.save(3.5)
    assert os.listdir(tmp_path) == []


def test_failing_surface_leaves_no_file(problem, tmp_path):
    model, batches = problem
    dirs = _dirs(model)
    path = tmp_path / "s.h5"
    with pytest.raises(ValueError, match="must be a scalar"):
        ls.surface(
            model,
            batches,
            directions=dirs,
            coords=[-1, 0, 1],
            loss_fn=_per_sample_loss,
            path=path,
            **QUIET,
        )
    with pytest.raises(FileNotFoundError, match=r"cannot write the surface file .*does not exist"):
        ls.surface(
            model,
            batches,
            directions=dirs,
            coords=[-1, 0, 1],
            path=tmp_path / "no" / "s.h5",
            **QUIET,
        )

    def interrupted(outputs, targets):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ls.surface(
            model,
            batches,
            directions=dirs,
            coords=[-1, 0, 1],
            loss_fn=interrupted,
            path=path,
            **QUIET,
        )
    assert os.listdir(tmp_path) == []


def test_failing_overwrite_keeps_the_previous_surface_file(problem, tmp_path):
    model, batches = problem
    dirs = _dirs(model)
    path = tmp_path / "s.h5"
    first = ls.surface(model, batches, directions=dirs, coords=[-1, 0, 1], path=path, **QUIET)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="must be a scalar"):
        ls.surface(
            model,
            batches,
            directions=dirs,
            coords=[-1, 0, 1],
            loss_fn=_per_sample_loss,
            path=path,
            resume=False,
            **QUIET,
        )
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["s.h5"]
    again = ls.surface(model, batches, directions=dirs, coords=[-1, 0, 1], path=path, **QUIET)
    assert again.num_points == 0
    np.testing.assert_array_equal(again.loss, first.loss)


def test_failing_save_leaves_no_file(tmp_path):
    # a failing save over an existing file keeps it: tests/test_documents.py
    path = tmp_path / "r.h5"
    with pytest.raises(TypeError, match="data/metadata/value: cannot store a object"):
        ls.Report(metadata={"value": object()}).save(path)
    assert os.listdir(tmp_path) == []


def test_failing_analyze_with_path_writes_nothing(problem, tmp_path):
    model, batches = problem
    path = tmp_path / "r.h5"
    with pytest.raises(FloatingPointError, match="at batch 1"):
        ls.analyze(model, _nan_batches(batches), path=path, **QUIET)
    assert os.listdir(tmp_path) == []
