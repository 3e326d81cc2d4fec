"""SharpnessTracker: exact thresholds and sharpness on quadratics, Edge of Stability on an MLP,
warm starts, no side effects on training, and the framework adapters."""

import copy
import json
import math
import random
import sys
import types
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from optimizer_cases import DIM, N, half_mse, quadratic, top
from state import assert_unchanged, snapshot
from torch import nn

from landscape.metrics.thresholds import adam_preconditioner
from landscape.params import ParamSpace
from landscape.training.adapters import HFSharpnessCallback, LightningSharpnessCallback
from landscape.training.tracker import FIELDS, SharpnessTracker

matplotlib.use("Agg")


def gd_step(model, optimizer, data):
    batches = data if isinstance(data, list) else [data]
    loss = sum(half_mse(model(x), y) * len(x) for x, y in batches) / N
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss


# -- exact quantities on a quadratic -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "coefficient"),
    [
        ({}, 2.0),
        ({"momentum": 0.9}, 3.8),
        ({"momentum": 0.9, "nesterov": True}, 3.8 / 2.8),
        ({"momentum": 0.5, "dampening": 0.5}, 3.0 / 0.5),
    ],
    ids=["sgd", "momentum", "nesterov", "dampening"],
)
def test_sharpness_and_threshold_are_exact_on_a_quadratic(kwargs, coefficient):
    model, data, A = quadratic()
    lr = 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, **kwargs)
    tracker = SharpnessTracker(model, data, half_mse, every=1, k=2, tol=1e-10)
    gd_step(model, optimizer, data)
    record = tracker.step(optimizer, loss=torch.tensor(1.5))
    exact = torch.linalg.eigvalsh(A).flip(0)
    assert record["sharpness"] == pytest.approx(float(exact[0]), rel=1e-10)
    assert record["eigenvalues"] == pytest.approx(exact[:2].tolist(), rel=1e-10)
    assert record["threshold"] == pytest.approx(coefficient / lr, rel=1e-12)
    assert record["ratio"] == pytest.approx(float(exact[0]) * lr / coefficient, rel=1e-10)
    assert math.isnan(record["preconditioned_sharpness"])
    assert record["train_loss"] == 1.5
    theta = model.weight.detach().reshape(-1)
    assert record["loss"] == pytest.approx(float(0.5 * theta @ A @ theta), rel=1e-12)
    assert record["kind"] == (
        "sgd" if not kwargs else "nesterov" if "nesterov" in kwargs else "momentum"
    )
    assert record["converged"] and record["num_matvecs"] == record["num_matvecs_sharpness"] > 0


def test_coupled_weight_decay_enters_the_ratio():
    model, data, A = quadratic()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=0.3)
    tracker = SharpnessTracker(model, data, half_mse, every=1, tol=1e-10)
    gd_step(model, optimizer, data)
    record = tracker.step(optimizer)
    assert record["sharpness"] == pytest.approx(top(A), rel=1e-10)  # the loss Hessian
    assert record["ratio"] == pytest.approx((top(A) + 0.3) * 0.05 / 2.0, rel=1e-10)


def test_adam_preconditioner_matches_one_torch_adam_step():
    model, data, _ = quadratic()
    lr, betas, eps = 0.01, (0.9, 0.99), 1e-3
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=eps)
    for _ in range(3):
        gd_step(model, optimizer, data)
    before = model.weight.detach().clone().reshape(-1)
    gd_step(model, optimizer, data)
    after = model.weight.detach().reshape(-1)
    space = ParamSpace.from_module(model)
    P = adam_preconditioner(optimizer, space, dict(model.named_parameters()))
    m = optimizer.state[model.weight]["exp_avg"].reshape(-1)
    torch.testing.assert_close(after, before - lr * m / P, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    ("cls", "wd"),
    [(torch.optim.Adam, 0.0), (torch.optim.Adam, 0.2), (torch.optim.AdamW, 0.2)],
    ids=["adam", "adam_coupled_wd", "adamw"],
)
def test_adam_preconditioned_sharpness_is_exact(cls, wd):
    model, data, A = quadratic()
    lr = 0.01
    optimizer = cls(model.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-3, weight_decay=wd)
    tracker = SharpnessTracker(model, data, half_mse, every=2, tol=1e-10)
    assert math.isnan(tracker.measure(optimizer, step=0)["preconditioned_sharpness"])  # no state
    for _ in range(4):
        gd_step(model, optimizer, data)
        record = tracker.step(optimizer)
    # P of the next step (s = t + 1 = 5), written from torch's Adam: what its step divides by
    state = optimizer.state[model.weight]
    s = int(state["step"]) + 1
    v = state["exp_avg_sq"].reshape(-1)
    P = (1 - 0.9**s) * ((v / (1 - 0.99**s)).sqrt() + 1e-3)
    coupled = wd if cls is torch.optim.Adam else 0.0
    D = torch.diag(P.rsqrt())
    expected = top(D @ (A + coupled * torch.eye(DIM, dtype=A.dtype)) @ D)
    assert record["preconditioned_sharpness"] == pytest.approx(expected, rel=1e-9)
    assert record["sharpness"] == pytest.approx(top(A), rel=1e-9)
    # AdamW's decoupled decay delta = lr * wd lowers the coefficient to (2 - delta)(1 + b)/(1 - b)
    delta = lr * wd if cls is torch.optim.AdamW else 0.0
    threshold = (2 - delta) * 1.9 / 0.1 / lr
    assert record["threshold"] == pytest.approx(threshold, rel=1e-12)
    assert record["ratio"] == pytest.approx(expected / threshold, rel=1e-9)
    assert (record["measure"], record["preconditioner"]) == (
        "preconditioned sharpness",
        "optimizer state",
    )
    # the last step's P_t (Cohen et al.'s) is older by one bias correction: a control
    space = ParamSpace.from_module(model)
    P_t = adam_preconditioner(optimizer, space, dict(model.named_parameters()))
    D = torch.diag(P_t.rsqrt())
    older = top(D @ (A + coupled * torch.eye(DIM, dtype=A.dtype)) @ D)
    assert abs(record["preconditioned_sharpness"] / older - 1) > 0.01
    assert record["num_matvecs"] > record["num_matvecs_sharpness"]
    h = tracker.history
    assert h["step"].tolist() == [0, 2, 4] and list(h["kind"]) == ["adam"] * 3
    off = SharpnessTracker(model, data, half_mse, preconditioned=False, tol=1e-10)
    record = off.measure(optimizer)
    assert math.isnan(record["preconditioned_sharpness"]) and math.isnan(record["ratio"])


def test_preconditioned_true_needs_adam_and_named_optimizers_need_lr():
    model, data, A = quadratic()
    tracker = SharpnessTracker(model, data, half_mse, preconditioned=True, tol=1e-10)
    with pytest.raises(ValueError, match="Adam"):
        tracker.measure(torch.optim.SGD(model.parameters(), lr=0.1))
    named = SharpnessTracker(model, data, half_mse, every=1, tol=1e-10)
    with pytest.raises(ValueError, match="lr="):
        named.step("sgd")
    record = named.step("momentum", lr=0.1, momentum=0.9)
    assert record["threshold"] == pytest.approx(38.0)
    assert record["ratio"] == pytest.approx(top(A) / 38.0, rel=1e-10)
    with pytest.raises(ValueError, match="every"):
        SharpnessTracker(model, data, every=0)
    with pytest.raises(ValueError, match="trace"):
        SharpnessTracker(model, data, trace=-3)


def test_trace_and_batch_sharpness_on_a_quadratic():
    model, data, A = quadratic(batches=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    tracker = SharpnessTracker(
        model, data, half_mse, every=1, trace=40, batch_sharpness=True, tol=1e-10
    )
    gd_step(model, optimizer, data)
    record = tracker.step(optimizer)
    assert abs(record["trace"] - float(A.trace())) < 5 * record["trace_stderr"]
    theta = model.weight.detach().reshape(-1)
    ratios = []
    for x, _ in data:
        H = x.T @ x / len(x)
        g = H @ theta
        ratios.append(float(g @ H @ g / (g @ g)))
    assert record["batch_sharpness"] == pytest.approx(np.mean(ratios), rel=1e-10)
    assert record["batch_sharpness_ratio"] == pytest.approx(np.mean(ratios) * 0.05 / 2, rel=1e-10)
    assert record["num_matvecs"] == record["num_matvecs_sharpness"] + 40 + 4
    # a random subset of 2 batches, reproducible from the seed
    sub = SharpnessTracker(model, data, half_mse, batch_sharpness=2, tol=1e-10, seed=3)
    again = SharpnessTracker(model, data, half_mse, batch_sharpness=2, tol=1e-10, seed=3)
    value = sub.measure(optimizer)["batch_sharpness"]
    assert value == again.measure(optimizer)["batch_sharpness"]
    assert min(ratios) <= value <= max(ratios)


def test_threshold_follows_a_learning_rate_schedule():
    model, data, _ = quadratic()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    tracker = SharpnessTracker(model, data, half_mse, every=2, tol=1e-8)
    for _ in range(16):
        gd_step(model, optimizer, data)
        tracker.step(optimizer)
        scheduler.step()
    h = tracker.history
    expected_lr = 0.1 * 0.5 ** ((h["step"] - 1) // 5)
    np.testing.assert_allclose(h["lr"], expected_lr, rtol=1e-12)
    np.testing.assert_allclose(h["threshold"], 2.0 / expected_lr, rtol=1e-12)
    assert len(set(h["threshold"].round(9))) == 4
    np.testing.assert_allclose(h["ratio"], h["sharpness"] / h["threshold"], rtol=1e-12)


# -- Edge of Stability on a small MLP ---------------------------------------------------------------
def mlp_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(32, 2, generator=g, dtype=torch.float64)
    Y = torch.sin(2 * X[:, :1]) * torch.cos(X[:, 1:])
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    return model, X, Y


def train_gd(lr, steps, every=10, **tracker_kwargs):
    model, X, Y = mlp_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    tracker = SharpnessTracker(model, (X, Y), nn.MSELoss(), every=every, **tracker_kwargs)
    for _ in range(steps):
        loss = F.mse_loss(model(X), Y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tracker.step(optimizer, loss=loss)
    return tracker, model, X, Y


def test_gradient_descent_reaches_the_edge_of_stability():
    # Full-batch GD, lr = 0.2: progressive sharpening from ~0.65 * 2/lr to 2/lr by step ~350,
    # then the sharpness hovers at the threshold (Cohen et al. 2021).
    tracker, model, X, Y = train_gd(0.2, 600)
    h, s = tracker.history, tracker.summary()
    assert h["ratio"][0] < 0.8  # it started well below the threshold: sharpening happened
    assert 200 <= s["crossing_step"] <= 500
    # after the crossing it hovers at 2/lr: within 10% on average, 15% at every measurement
    after = h["sharpness"][h["step"] >= s["crossing_step"]]
    assert abs(s["ratio_mean"] - 1.0) < 0.1 and abs(after.mean() - 2 / 0.2) < 0.1 * 2 / 0.2
    assert np.abs(after * 0.2 / 2 - 1.0).max() < 0.15 and len(after) >= 20
    assert s["max_ratio"] > 1.0 and s["alarm"]  # MSE overshoots the threshold slightly
    assert s["initial_sharpness"] == pytest.approx(h["sharpness"][0])
    assert s["safe_lr"] == pytest.approx(2.0 / h["sharpness"][0])
    assert h["converged"].all()
    H = SharpnessTracker(model, (X, Y), nn.MSELoss()).operator.to_dense()
    assert h["sharpness"][-1] == pytest.approx(top(H), rel=1e-4)
    with torch.no_grad():
        assert h["loss"][-1] == pytest.approx(float(F.mse_loss(model(X), Y)), rel=1e-12)
    # warm starts: once warm, a measurement costs far fewer products than the cold first one
    assert np.median(h["num_matvecs"][1:]) < h["num_matvecs"][0]


def test_small_step_size_never_reaches_the_threshold():
    tracker, *_ = train_gd(0.05, 600, every=20)
    s = tracker.summary()
    assert s["crossing_step"] is None and s["ratio_mean"] is None
    assert s["max_ratio"] < 0.5 and not s["alarm"]


def test_warm_start_reduces_hessian_vector_products():
    tracker, *_ = train_gd(0.1, 2, every=1)
    first, second = tracker.history["num_matvecs"]
    assert second < first
    cold = SharpnessTracker(tracker.model, tracker.operator.source.data, nn.MSELoss())
    cold_cost = cold.measure("sgd", lr=0.1)["num_matvecs"]
    assert second < cold_cost


# -- summaries and serialization ------------------------------------------------------------------
def synthetic(ratios):
    model, data, _ = quadratic()
    tracker = SharpnessTracker(model, data, half_mse)
    for i, r in enumerate(ratios):
        record = dict.fromkeys(FIELDS, math.nan)
        record.update(
            step=10 * (i + 1),
            lr=0.1,
            kind="sgd",
            threshold=20.0,
            sharpness=20.0 * r,
            ratio=r,
            eigenvalues=[20.0 * r],
            num_matvecs=5,
            num_matvecs_sharpness=5,
            converged=True,
        )
        tracker._records.append(record)
    return tracker


def test_summary_crossing_statistics_and_alarm():
    tracker = synthetic([0.5, 0.8, 0.96, 1.02, 1.05, 0.99, 1.01, 1.03, 1.04, 0.9])
    s = tracker.summary()
    assert s["crossing_step"] == 30
    after = np.array([0.96, 1.02, 1.05, 0.99, 1.01, 1.03, 1.04, 0.9])
    assert s["ratio_mean"] == pytest.approx(after.mean())
    assert s["ratio_std"] == pytest.approx(after.std())
    assert s["max_ratio"] == 1.05 and s["max_ratio_step"] == 50
    assert s["longest_run_above_one"] == 3 and s["alarm"] and s["alarm_step"] == 90
    assert not tracker.summary(patience=4)["alarm"]
    assert s["initial_sharpness"] == pytest.approx(10.0) and s["safe_lr"] == pytest.approx(0.2)
    assert s["total_matvecs"] == 50
    quiet = synthetic([0.5, 0.6]).summary()
    assert quiet["crossing_step"] is None and not quiet["alarm"]
    with pytest.raises(ValueError, match="key"):
        tracker.summary(key="sharpness")


def test_to_dict_is_json_and_plot_is_a_figure():
    tracker, *_ = train_gd(0.1, 20, every=5, trace=4)
    out = tracker.to_dict()
    text = json.dumps(out, allow_nan=False)
    back = json.loads(text)
    assert back["history"]["step"] == [5, 10, 15, 20]
    assert back["history"]["preconditioned_sharpness"] == [None] * 4
    assert back["settings"]["trace"] == 4 and back["summary"]["num_measurements"] == 4
    fig = tracker.plot()
    assert len(fig.axes) == 2
    import matplotlib.pyplot as plt

    plt.close(fig)


# -- training is not disturbed --------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 12)
        self.bn = nn.BatchNorm1d(12)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.tanh(self.bn(self.fc1(x)))))


def run_training(with_tracker, optimizer_cls, check_state=False):
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - the legacy global state is what must stay untouched
    random.seed(0)
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    dataset = torch.utils.data.TensorDataset(X, y)
    model = Net()
    optimizer = optimizer_cls(model.parameters())
    # A shuffling loader draws from the global torch RNG every time it is iterated.
    measure_on = torch.utils.data.DataLoader(dataset, batch_size=10, shuffle=True)
    tracker = SharpnessTracker(
        model, measure_on, every=3, k=2, trace=3, batch_sharpness=2, cache=False
    )
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True)
    step = 0
    for _ in range(2):
        for xb, yb in train_loader:
            model.train()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            step += 1
            if with_tracker:
                before = snapshot(model) if check_state else None
                rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())  # noqa: NPY002
                tracker.step(optimizer, loss=loss)
                if check_state:
                    assert_unchanged(model, before)
                assert torch.equal(torch.get_rng_state(), rng[0])
                np.testing.assert_equal(np.random.get_state(), rng[1])  # noqa: NPY002
                assert random.getstate() == rng[2]
            optimizer.zero_grad()
    if with_tracker:
        assert len(tracker.history["step"]) == step // 3
    return model, optimizer, torch.get_rng_state()


@pytest.mark.parametrize(
    "optimizer_cls",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.AdamW(p, lr=0.01),
    ],
    ids=["momentum", "adamw"],
)
def test_training_is_bitwise_identical_with_and_without_the_tracker(optimizer_cls):
    plain, plain_opt, plain_rng = run_training(False, optimizer_cls)
    tracked, tracked_opt, tracked_rng = run_training(True, optimizer_cls, check_state=True)
    for (name, a), b in zip(plain.state_dict().items(), tracked.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(plain_opt.state.values(), tracked_opt.state.values()):
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
    assert torch.equal(plain_rng, tracked_rng)


# -- framework adapters ---------------------------------------------------------------------------
def fake_module(monkeypatch, names, attribute):
    class Base:
        pass

    leaf = types.ModuleType(names[-1])
    setattr(leaf, attribute, Base)
    Base.__module__, Base.__qualname__ = names[-1], attribute
    for name in names:
        monkeypatch.setitem(
            sys.modules, name, leaf if name == names[-1] else types.ModuleType(name)
        )
    return Base


def test_lightning_adapter_with_a_stand_in_framework(monkeypatch):
    Callback = fake_module(monkeypatch, ["lightning", "lightning.pytorch"], "Callback")
    model, data, A = quadratic()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    tracker = SharpnessTracker(model, data, half_mse, every=2, tol=1e-10)
    callback = LightningSharpnessCallback(tracker)
    assert isinstance(callback, Callback) and isinstance(callback, LightningSharpnessCallback)
    assert type(callback).__name__ == "LightningSharpnessCallback"
    logged = []
    module = SimpleNamespace(log_dict=lambda values, **kw: logged.append(values))
    trainer = SimpleNamespace(global_step=0, optimizers=[optimizer])
    for batch_idx in range(8):  # gradient accumulation over 2 batches: 4 optimizer steps
        if batch_idx % 2 == 1:
            loss = gd_step(model, optimizer, data)
            trainer.global_step += 1
        callback.on_train_batch_end(
            trainer, module, {"loss": loss if batch_idx else None}, None, batch_idx
        )
    assert tracker.num_calls == 4
    assert tracker.history["step"].tolist() == [2, 4]
    assert len(logged) == 2 and logged[-1]["sharpness"] == pytest.approx(top(A), rel=1e-9)
    assert callback.last_record["threshold"] == pytest.approx(40.0)
    with pytest.raises(TypeError, match="SharpnessTracker"):
        LightningSharpnessCallback(object())


def test_hf_adapter_with_a_stand_in_framework(monkeypatch):
    TrainerCallback = fake_module(monkeypatch, ["transformers"], "TrainerCallback")
    model, data, _ = quadratic()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    tracker = SharpnessTracker(model, data, half_mse, every=1, tol=1e-10)
    callback = HFSharpnessCallback(tracker)
    assert isinstance(callback, TrainerCallback)
    state = SimpleNamespace(global_step=0, log_history=[])
    wrapped = SimpleNamespace(optimizer=optimizer)  # like accelerate's AcceleratedOptimizer
    for _ in range(3):
        gd_step(model, optimizer, data)
        state.global_step += 1
        callback.on_step_end(None, state, None, model=model, optimizer=wrapped)
    assert tracker.history["step"].tolist() == [1, 2, 3]
    assert [r["step"] for r in state.log_history] == [1, 2, 3]
    assert np.isfinite(tracker.history["preconditioned_sharpness"]).all()
    clone = copy.deepcopy(callback)  # trainers may copy callbacks (the class is built lazily)
    assert isinstance(clone, TrainerCallback)
    assert clone.tracker.history["step"].tolist() == [1, 2, 3]


def test_adapters_name_the_missing_package(monkeypatch):
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "transformers"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail
    model, data, _ = quadratic()
    tracker = SharpnessTracker(model, data, half_mse)
    with pytest.raises(ImportError, match="pip install lightning"):
        LightningSharpnessCallback(tracker)
    with pytest.raises(ImportError, match="pip install transformers"):
        HFSharpnessCallback(tracker)


@pytest.mark.frameworks
def test_lightning_adapter_in_a_real_trainer(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    model, data, A = quadratic()

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = model

        def training_step(self, batch, batch_idx):
            return half_mse(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    tracker = SharpnessTracker(model, data, half_mse, every=2, tol=1e-8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data), batch_size=N)
    trainer = pl.Trainer(
        max_steps=4,
        callbacks=[LightningSharpnessCallback(tracker, package="lightning")],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(Module(), loader)
    assert tracker.history["step"].tolist() == [2, 4]
    np.testing.assert_allclose(tracker.history["sharpness"], top(A), rtol=1e-6)


@pytest.mark.frameworks
def test_hf_adapter_in_a_real_trainer(tmp_path):
    transformers = pytest.importorskip("transformers")
    model, (X, Y), A = quadratic()

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x, labels=None):
            out = self.net(x)
            return {"loss": half_mse(out, labels), "logits": out}

    wrapper = Model()
    tracker = SharpnessTracker(
        wrapper, {"x": X, "labels": Y}, batch_loss=lambda m, b: m(**b)["loss"], every=2, tol=1e-8
    )
    dataset = [{"x": X[i], "labels": Y[i]} for i in range(N)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=N,
        learning_rate=0.05,
        optim="sgd",
        lr_scheduler_type="constant",
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = transformers.Trainer(
        model=wrapper, args=args, train_dataset=dataset, callbacks=[HFSharpnessCallback(tracker)]
    )
    trainer.train()
    assert tracker.history["step"].tolist() == [2, 4]
    np.testing.assert_allclose(tracker.history["sharpness"], top(A), rtol=1e-6)


@pytest.mark.frameworks
def test_unwrap_optimizer_sees_through_the_real_framework_wrappers():
    accelerate = pytest.importorskip("accelerate")
    pytest.importorskip("lightning")
    from accelerate.state import AcceleratorState, GradientState
    from lightning.fabric.wrappers import _FabricOptimizer
    from lightning.pytorch.core.optimizer import LightningOptimizer
    from lightning.pytorch.utilities.types import LRSchedulerConfig

    from landscape.metrics.thresholds import optimizer_settings, unwrap_optimizer

    model, data, _ = quadratic()
    adam = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99))
    scheduler = torch.optim.lr_scheduler.StepLR(adam, step_size=10)
    accelerator = accelerate.Accelerator(cpu=True)
    try:
        accelerated = accelerator.prepare_optimizer(adam)
        accelerated_scheduler = accelerator.prepare_scheduler(scheduler)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    lightning_optimizer = LightningOptimizer(adam)
    # Both wrappers pass isinstance checks, so an isinstance(..., Optimizer) test cannot stop.
    assert isinstance(accelerated, torch.optim.Optimizer)
    assert isinstance(lightning_optimizer, torch.optim.Adam)
    wrappers = {
        "AcceleratedOptimizer": accelerated,
        "AcceleratedScheduler": accelerated_scheduler,
        "LightningOptimizer": lightning_optimizer,
        "LightningOptimizer(AcceleratedOptimizer)": LightningOptimizer(accelerated),
        "_FabricOptimizer": _FabricOptimizer(adam, strategy=None),
        "LRSchedulerConfig": LRSchedulerConfig(scheduler),
        "StepLR": scheduler,
        "an object with .optimizer": SimpleNamespace(optimizer=accelerated),
    }
    for module in ("pytorch_lightning.core.optimizer", "lightning_fabric.wrappers"):
        try:
            wrapper = __import__(module, fromlist=["_"])
        except ImportError:
            continue
        if hasattr(wrapper, "LightningOptimizer"):
            wrappers[module] = wrapper.LightningOptimizer(adam)
        else:
            wrappers[module] = wrapper._FabricOptimizer(adam, strategy=None)
    expected = optimizer_settings(adam)
    assert expected.betas == (0.8, 0.99) and expected.lr == 0.01
    tracker = SharpnessTracker(model, data, half_mse, every=1, tol=1e-10)
    gd_step(model, adam, data)
    reference = tracker.measure(adam)["preconditioned_sharpness"]
    assert np.isfinite(reference)
    for name, wrapped in wrappers.items():
        assert unwrap_optimizer(wrapped) is adam, name
        assert optimizer_settings(wrapped) == expected, name
        record = tracker.measure(wrapped)
        assert record["kind"] == "adam", name
        assert record["preconditioned_sharpness"] == pytest.approx(reference, rel=1e-8), name
    assert unwrap_optimizer("adam") == "adam"
    assert unwrap_optimizer(model) is model  # nothing to unwrap: returned as it is


def dense_hessian(model, batches):
    """The Hessian of the token-weighted mean of model(**b).loss, by plain double backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    params = list(model.parameters())
    weights = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    with sdpa_kernel(SDPBackend.MATH):  # fused attention kernels have no double backward
        loss = sum(w * model(**b).loss for w, b in zip(weights, batches)) / sum(weights)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        flat = torch.cat([g.reshape(-1) for g in grads])
        eye = torch.eye(flat.numel(), dtype=flat.dtype)
        rows = []
        for start in range(0, flat.numel(), 128):  # 128 rows of H per batched backward
            block = torch.autograd.grad(
                flat,
                params,
                grad_outputs=eye[start : start + 128],
                retain_graph=True,
                is_grads_batched=True,
                materialize_grads=True,
            )
            rows.append(torch.cat([b.reshape(b.shape[0], -1) for b in block], dim=1))
    H = torch.cat(rows).double()
    return (H + H.T) / 2


@pytest.mark.frameworks
def test_tracker_in_a_real_hf_trainer_on_a_tiny_gpt2(tmp_path, one_thread):
    """A tiny GPT-2 trained by transformers.Trainer with AdamW and its own loss: at each
    measured step the sharpness and Adam's preconditioned sharpness equal the top eigenvalues of
    the dense Hessian of the token-weighted mean loss (and of P^-1/2 H P^-1/2, P from the
    optimizer's state) at the weights of that step."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    zoo = pytest.importorskip("zoo")
    torch.manual_seed(0)
    vocab, length, lr = 31, 8, 0.01
    model = transformers.GPT2LMHeadModel(zoo.gpt2_config(vocab)).double()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (16, length), generator=g)
    train = [
        {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()} for x in ids
    ]

    def batch(rows, pad=0):  # right padding: masked out of attention and of the loss
        x = ids[rows].clone()
        mask, labels = torch.ones_like(x), x.clone()
        if pad:
            mask[:, -pad:], labels[:, -pad:] = 0, -100
        return {"input_ids": x, "attention_mask": mask, "labels": labels}

    data = [batch(slice(0, 5)), batch(slice(5, 8), pad=3)]  # 35 and 12 scored next tokens
    tracker = SharpnessTracker(model, data, every=2, tol=1e-6)
    seen = {}

    class Record(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            inner = optimizer.optimizer  # accelerate's AcceleratedOptimizer around torch AdamW
            seen[state.global_step] = (
                {n: p.detach().clone() for n, p in model.named_parameters()},
                {
                    n: {k: torch.as_tensor(v).clone() for k, v in inner.state[p].items()}
                    for n, p in model.named_parameters()
                },
                inner.param_groups[0]["betas"],
                inner.param_groups[0]["eps"],
            )

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=lr,
        optim="adamw_torch",
        lr_scheduler_type="constant",
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    callback = HFSharpnessCallback(tracker)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=train, callbacks=[Record(), callback]
    )
    trainer.train()

    history = tracker.history
    assert history["step"].tolist() == [2, 4]
    assert history["kind"].tolist() == ["adam", "adam"]
    np.testing.assert_allclose(history["threshold"], 38.0 / lr, rtol=1e-12)
    assert [r["step"] for r in trainer.state.log_history if "sharpness" in r] == [2, 4]
    probe = copy.deepcopy(model).eval()
    for i, step in enumerate(history["step"].tolist()):
        params, state, (beta1, beta2), eps = seen[step]
        with torch.no_grad():
            for name, p in probe.named_parameters():
                p.copy_(params[name])
        H = dense_hessian(probe, data)
        assert float(torch.linalg.eigvalsh(H)[-1]) == pytest.approx(
            history["sharpness"][i], rel=1e-4
        )
        # P of Adam's next step, (1-β1^s) (sqrt(v / (1-β2^s)) + ε) with s = t + 1, from
        # torch's state: what the step after the measurement divides by.
        diag = []
        for name in params:  # in the order of the Hessian's rows
            t = float(state[name]["step"]) + 1
            v = state[name]["exp_avg_sq"].double()
            diag.append(((1 - beta1**t) * ((v / (1 - beta2**t)).sqrt() + eps)).reshape(-1))
        d = torch.cat(diag).rsqrt()
        preconditioned = float(torch.linalg.eigvalsh(d[:, None] * H * d[None, :])[-1])
        assert preconditioned == pytest.approx(history["preconditioned_sharpness"][i], rel=1e-4)
        assert history["ratio"][i] == pytest.approx(preconditioned * lr / 38.0, rel=1e-4)
    # The weights moved enough between the measured steps for the check to tell them apart.
    assert abs(history["sharpness"][1] / history["sharpness"][0] - 1) > 1e-3
