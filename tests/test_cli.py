"""The ``landscape`` command line (demo, analyze, show) and the demo module behind it."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape import cli, demo

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("landscape")

MODELS = """
import torch
from torch import nn


def mlp():
    return nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))


def narrow():
    return nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10))


def batches():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(32, 64, generator=g), torch.randint(0, 10, (32,), generator=g))
            for _ in range(2)]
"""


def _env():
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    return env


def _landscape(*args, cwd=None, timeout=300):
    assert SCRIPT.exists(), f"no console script {SCRIPT}: reinstall with `pip install -e .`"
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=_env(),
    )


@pytest.fixture(autouse=True)
def _agg_backend(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # cli.main sets it if absent: keep the env clean


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A directory with a module of model and data factories, and checkpoints."""
    (tmp_path / "mymodels.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI adds the current directory
    torch.manual_seed(0)
    torch.save(nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).state_dict(), "ok.pt")
    torch.save(nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10)).state_dict(), "bad.pt")
    yield tmp_path
    sys.modules.pop("mymodels", None)


# -- help -----------------------------------------------------------------------------------
def test_help_of_the_console_script():
    result = _landscape("--help")
    assert result.returncode == 0, result.stderr
    for text in ("demo", "analyze", "show", "examples:", "landscape demo --quick"):
        assert text in result.stdout


def test_python_dash_m_landscape():
    result = subprocess.run(
        [sys.executable, "-m", "landscape", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "usage: landscape" in result.stdout and "analyze" in result.stdout


def test_subcommand_help_and_no_command(capsys):
    for command in ("demo", "analyze", "show"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0
        assert "examples:" in capsys.readouterr().out
    assert cli.main([]) == 2
    assert "usage: landscape" in capsys.readouterr().err


# -- demo and show --------------------------------------------------------------------------
def test_demo_quick_writes_figures_html_and_h5_and_show_reads_them(tmp_path):
    out = tmp_path / "figs"
    result = _landscape("demo", "--quick", "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Landscape comparison: SGD vs Adam" in result.stdout
    assert "trained SGD" in result.stdout and "trained Adam" in result.stdout
    assert f"wrote 13 files to {out}" in result.stdout
    pngs = sorted(p.name for p in out.glob("*.png"))
    for name in ("demo_interpolation.png", "demo_surfaces_2d.png", "demo_sgd_eigenvalues.png"):
        assert name in pngs
    html = (out / "demo_report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    comparison = ls.load(out / "demo_comparison.h5")
    assert comparison.names == ["SGD", "Adam"]

    shown = _landscape("show", str(out / "demo_comparison.h5"), "--figures", str(tmp_path / "s"))
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stdout.startswith(comparison.summary().splitlines()[0])
    assert "Linear interpolation" in shown.stdout
    assert (tmp_path / "s" / "interpolation.png").exists()
    assert (tmp_path / "s" / "adam_spectrum.png").exists()  # each model's figures too


def test_show_errors(tmp_path, capsys):
    assert cli.main(["show", str(tmp_path / "missing.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "not.h5").write_text("hello")
    assert cli.main(["show", str(tmp_path / "not.h5")]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err


# -- analyze ----------------------------------------------------------------------------------
def test_analyze_mismatched_checkpoint_is_a_clear_error(project):
    result = _landscape(
        "analyze", "--model", "mymodels:mlp", "--checkpoint", "bad.pt", "--data", "digits",
        cwd=project,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "does not match the model's architecture" in result.stderr
    assert "0.weight: checkpoint (8, 64) vs model (16, 64)" in result.stderr
    assert result.stdout == ""


def test_analyze_state_dict_into_a_factory_model(project, capsys):
    code = cli.main(
        ["analyze", "--model", "mymodels:mlp", "--checkpoint", "ok.pt", "--data",
         "mymodels:batches", "--out", "run.h5", "--no-surfaces", "--no-learning-rates",
         "--no-progress"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "Landscape report: Sequential" in out and "wrote 1 files" in out
    report = ls.load(project / "run.h5")
    assert report.metadata["num_params"] == 64 * 16 + 16 + 16 * 10 + 10
    expected = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    expected.load_state_dict(torch.load(project / "ok.pt"))
    import mymodels

    data = mymodels.batches()
    assert report.loss.value == pytest.approx(ls.evaluate(expected, data)["value"])


def test_analyze_whole_saved_model_and_file_factory(project, capsys):
    sys.path.insert(0, str(project))
    import mymodels

    torch.save(mymodels.mlp(), project / "whole.pt")
    code = cli.main(
        ["analyze", "--model", "whole.pt", "--allow-pickle", "--data", "mymodels.py:batches",
         "--no-surfaces", "--no-learning-rates", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert "Landscape report" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "missing.pt", "--data", "digits"], "no such file"),
        (["--model", "mymodels:mlp", "--checkpoint", "missing.pt", "--data", "digits"],
         "no such file: 'missing.pt'"),
        (["--model", "nomodule_xyz:make", "--data", "digits"], "cannot import module"),
        (["--model", "mymodels:nothing", "--data", "digits"], "has no 'nothing'"),
        (["--model", "mymodels", "--data", "digits"], "not of the form MODULE:NAME"),
        (["--model", "ok.pt", "--data", "digits"], "holds a state_dict, not a model"),
        (["--model", "mymodels:mlp", "--data", "imagenet"], "expected one of"),
        (["--model", "mymodels:mlp", "--data", "mnist1d"], "cannot take a batch"),
        (["--model", "mymodels:mlp", "--data", "digits", "--out", "no/dir/x.h5"],
         "the directory does not exist"),
    ],
)  # fmt: skip
def test_analyze_usage_errors_exit_2(project, capsys, args, message):
    assert cli.main(["analyze", *args, "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.startswith("landscape analyze: error: ")


# -- the demo module ------------------------------------------------------------------------
def test_loaders_are_offline_and_deterministic():
    train, test = demo.digits_loaders(batch_size=32)
    assert (len(train.dataset), len(test.dataset)) == (1438, 359)
    x, y = next(iter(train))
    assert x.shape == (32, 64) and y.dtype == torch.long and float(x.max()) <= 1.0
    state = np.random.get_state()[1].copy()  # noqa: NPY002 (mnist1d reseeds it)
    a, _ = demo.mnist1d_loaders(num_samples=100, generated=500)
    b, _ = demo.mnist1d_loaders(num_samples=100, generated=500)
    assert (np.random.get_state()[1] == state).all()  # noqa: NPY002 (restored)
    assert len(a.dataset) == 100 and a.dataset.tensors[0].shape[1] == 40
    assert torch.equal(a.dataset.tensors[0], b.dataset.tensors[0])


def test_missing_data_extra_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails
    with pytest.raises(demo.MissingExtraError, match=r"pip install 'landscape\[data\]'"):
        demo.digits_loaders()
    assert cli.main(["demo", "--quick", "--out", "unused"]) == 2
    assert "install the data extra" in capsys.readouterr().err


def test_train_is_reproducible_and_leaves_global_rng_alone():
    train, _ = demo.digits_loaders(num_samples=128)
    torch.manual_seed(0)
    a, b = demo.cnn(), demo.cnn()
    b.load_state_dict(a.state_dict())
    before = torch.get_rng_state()
    ra = demo.train(a, train, optimizer="adam", lr=1e-2, epochs=2, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    demo.train(b, train, optimizer="adam", lr=1e-2, epochs=2, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert isinstance(ra.optimizer, torch.optim.Adam) and len(ra.losses) == 2
