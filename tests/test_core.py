"""The core every function shares: one Problem, one data loop, one Hessian product.

- ``analyze`` builds one :class:`landscape.Problem` and reads the user's loader once;
- functions accept a Problem and its variants (``with_params``, ``with_data``, ``at``);
- sharpness and the tracker multiply through the Hessian operator, so a
  ``@once_differentiable`` function gets finite differences instead of a silent zero;
- ``subset_spread(max_batches=m)`` splits the data its whole-sample Hessian uses;
- ``analyze(path=...)`` killed mid-run resumes, recomputing only the unfinished stages.
"""

import math
import os
import signal
import subprocess
import sys
import warnings

import pytest
import torch
from oracles import exact_hessian
from test_precision import _OnceDifferentiable
from torch import nn

import landscape as ls
from landscape import stages
from landscape.problem import Problem

HERE = os.path.dirname(os.path.abspath(__file__))


def _classifier(seed=0, n=96, batch=32):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3)).double()
    X = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return model, [(X[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


class CountingLoader:
    """A re-iterable loader that counts the passes made over it."""

    def __init__(self, batches):
        self.batches, self.passes = batches, 0
        self.batch_size = len(batches[0][1])

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.passes += 1
        return iter(self.batches)


# -- one problem ----------------------------------------------------------------------------------


def test_analyze_builds_one_problem_and_reads_the_loader_once(monkeypatch):
    model, batches = _classifier()
    loader = CountingLoader(batches)
    built = []
    original = Problem.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Problem, "__init__", counting)
    report = ls.analyze(model, loader, progress=False)
    assert len(built) == 1  # every stage works on a variant of the one problem
    assert loader.passes == 1  # the samples are counted on the pass that caches the data
    assert report.metadata["num_samples"] == 96


def test_functions_take_a_problem_and_its_variants():
    model, batches = _classifier()
    problem = ls.Problem(model, batches)
    v = torch.randn(problem.space.dim, dtype=torch.float64)
    assert torch.allclose(ls.hessian(problem) @ v, ls.hessian(model, batches) @ v)
    # with_params: the diagonal block; with_data: a prefix; at: other parameter values
    last = problem.with_params("2")
    block = ls.hessian(model, batches, params="2").to_dense()
    assert torch.allclose(ls.hessian(last).to_dense(), block)
    assert problem.with_data(max_samples=40).num_samples == 40 == problem.num_samples - 56
    theta = problem.parameters_vector() * 0.5
    moved = problem.at(theta)
    twin = _classifier()[0]
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
    assert moved.loss() == pytest.approx(ls.evaluate(twin, batches)["value"], rel=1e-12)
    assert torch.allclose(ls.hessian(moved) @ v, ls.hessian(twin, batches) @ v)
    _, g = moved.value_and_grad()
    names = [n for n, _ in twin.named_parameters()]
    H = exact_hessian(twin, batches, lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), names)
    assert H.shape == (problem.space.dim,) * 2 and torch.isfinite(g).all()
    with pytest.raises(TypeError, match="a Problem carries its data"):
        ls.hessian(problem, batches)
    with pytest.raises(TypeError, match=r"\['mode'\] are part of the Problem"):
        ls.hessian(problem, mode="train")
    with pytest.raises(TypeError, match="the problem's options are"):
        ls.hessian(model, batches, max_sample=3)


def test_old_spellings_name_the_new_one():
    model, batches = _classifier()
    with pytest.raises(TypeError, match=r"rho= is now spelled settings=ls.SharpnessSettings"):
        ls.sharpness(model, batches, rho=0.1)
    with pytest.raises(TypeError, match=r"hessian_samples= is now spelled hessian=ls"):
        ls.coherence(model, batches, hessian_samples=2)
    with pytest.raises(TypeError, match=r"lr= is now spelled optimizer=ls.OptimizerSettings"):
        ls.max_learning_rate(model, batches, lr=0.1)
    dirs = ls.random_directions(model, n=1)
    with pytest.raises(TypeError, match=r"directions=\.\.\., coords=\.\.\."):
        ls.surface(model, batches, dirs)
    with pytest.warns(DeprecationWarning, match=r"ls\.plan"):
        plan = ls.analyze(model, batches, dry_run=True, progress=False)
    assert isinstance(plan, ls.Plan)


def test_subset_spread_splits_the_data_its_hessian_uses():
    model, batches = _classifier(n=160, batch=40)
    spread = ls.subset_spread(model, batches, num_subsets=2, max_batches=2)
    assert spread.samples == 80  # the first two batches, not all four
    whole = ls.eigenvalues(ls.hessian(model, batches[:2]), k=1, tol=1e-3).values[0]
    assert spread.lambda_max.value == pytest.approx(float(whole), rel=1e-3)


# -- one Hessian product ---------------------------------------------------------------------------


def _once_differentiable_pair():
    torch.manual_seed(0)
    model = _OnceDifferentiable().double()
    reference = _OnceDifferentiable(custom=False).double()  # the same function, autograd's own
    reference.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(24, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (24,))
    return model, reference, [(X[:12], y[:12]), (X[12:], y[12:])]


def test_sharpness_through_a_once_differentiable_function_matches_the_truth():
    # torch 2.13 reads the second derivatives through a @once_differentiable backward as
    # zero: a sharpness measure with its own double-backward was 24 % off here. Through the
    # operator, the product falls back to finite differences of gradients (1e-8 in float64).
    model, reference, batches = _once_differentiable_pair()
    settings = ls.SharpnessSettings(rho=0.05, gam_steps=2, lanczos_tol=1e-10)
    measures = ("lambda_max", "gam")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ls.FiniteDifferenceWarning)
        got = ls.sharpness(model, batches, measures=measures, settings=settings)
    truth = ls.sharpness(reference, batches, measures=measures, settings=settings)
    for name in measures:
        assert got[name].value == pytest.approx(truth[name].value, rel=1e-6), name
    assert got["gam"].num_matvecs == truth["gam"].num_matvecs == 2


def test_tracker_through_a_once_differentiable_function_matches_the_truth():
    model, reference, batches = _once_differentiable_pair()
    records = []
    for m in (model, reference):
        tracker = ls.SharpnessTracker(m, batches, every=1, batch_sharpness=True, tol=1e-10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ls.FiniteDifferenceWarning)
            records.append(tracker.measure(torch.optim.SGD(m.parameters(), lr=0.1)))
    got, truth = records
    for key in ("sharpness", "batch_sharpness", "loss"):
        assert got[key] == pytest.approx(truth[key], rel=1e-6), key
    assert math.isfinite(got["batch_sharpness"]) and got["batch_sharpness"] > 0


# -- resuming an analysis ----------------------------------------------------------------------------

_KILLED_RUN = """
import os, signal, sys
import torch
sys.path.insert(0, {here!r})
from test_core import _classifier
import landscape as ls
from landscape import stages

stage = next(s for s in stages.STAGES if s.name == {kill_at!r})

def killing(context):
    os.kill(os.getpid(), signal.SIGKILL)

stages.STAGES = tuple(
    s if s is not stage else stages.Stage(s.name, s.fields, killing, s.cost, s.switch)
    for s in stages.STAGES
)
model, batches = _classifier()
ls.analyze(model, batches, path={path!r}, **{options!r})
"""

OPTIONS = {"progress": False, "backend": "double_backward", "learning_rates": False}


def _report_values(report):
    return {
        "top": report.eigenvalues.top.values.tolist(),
        "bottom": report.eigenvalues.bottom.values.tolist(),
        "trace": report.trace.value,
        "frobenius": report.frobenius.value,
        "density": report.density.density.tolist(),
        "layers": [row.trace for row in report.layerwise.layers],
        "surface": report.surface_2d.loss.tolist(),
        "sam": report.sharpness["sam"].value,
        "alpha": report.coherence.alpha,
        "loss": report.loss.value,
    }


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_analysis_resumes_and_recomputes_only_the_rest(tmp_path, monkeypatch):
    path = str(tmp_path / "run.h5")
    script = _KILLED_RUN.format(here=HERE, kill_at="sharpness", path=path, options=OPTIONS)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    partial = ls.load(path)  # every stage before the kill is on disk
    assert list(partial.costs) == [
        "loss", "eigenvalues", "subsets", "trace", "density", "layerwise", "block_spectra",
        "surfaces",
    ]  # fmt: skip
    ran = []
    for i, stage in enumerate(stages.STAGES):

        def recording(context, stage=stage):
            ran.append(stage.name)
            return stage.run(context)

        wrapped = stages.Stage(stage.name, stage.fields, recording, stage.cost, stage.switch)
        monkeypatch.setattr(
            stages, "STAGES", (*stages.STAGES[:i], wrapped, *stages.STAGES[i + 1 :])
        )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, batches = _classifier()
        resumed = ls.analyze(model, batches, path=path, **OPTIONS)
        assert ran == ["sharpness", "coherence"]
        fresh = ls.analyze(_classifier()[0], batches, **OPTIONS)
        ran.clear()
        again = ls.analyze(model, batches, path=path, **OPTIONS)  # finished: nothing to redo
    finally:
        torch.set_num_threads(threads)
    assert _report_values(resumed) == _report_values(fresh)
    assert resumed.metadata["resumed_stages"][0] == "loss" and resumed.costs["loss"].resumed
    assert not resumed.costs["sharpness"].resumed
    assert ran == []
    assert _report_values(again) == _report_values(fresh)


def test_a_file_of_another_analysis_is_refused(tmp_path):
    path = str(tmp_path / "run.h5")
    options = {"progress": False, "surfaces": False, "learning_rates": False}
    model, batches = _classifier()
    ls.analyze(model, batches, path=path, **options)
    with pytest.raises(ValueError, match="another settings"):
        ls.analyze(model, batches, path=path, seed=1, **options)
    other = _classifier(seed=4)[0]
    with pytest.raises(ValueError, match="another model"):
        ls.analyze(other, batches, path=path, **options)
    with pytest.raises(ValueError, match="another data"):
        ls.analyze(model, batches[:2], path=path, **options)
    (tmp_path / "junk.h5").write_text("not a report")
    with pytest.raises(ValueError, match="not a report this analysis can resume"):
        ls.analyze(model, batches, path=str(tmp_path / "junk.h5"), **options)
