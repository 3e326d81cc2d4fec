"""Every bad input named in the foundation issue raises a clear, specific exception."""

import pytest
import torch
from cases import CASES
from torch import nn

import landscape as ls


@pytest.fixture
def problem():
    return CASES[0].build()


def _P(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_empty_data(problem):
    model, _ = problem
    with pytest.raises(ValueError, match="empty"):
        ls.hessian(model, [])
    empty = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.zeros(0, 5), torch.zeros(0))
    )
    with pytest.raises(ValueError, match="empty"):
        ls.hessian(model, empty)


def test_data_that_yields_nothing(problem):
    model, _ = problem

    class Lazy:  # re-iterable without __len__, yielding nothing
        def __iter__(self):
            return iter(())

    H = ls.hessian(model, Lazy())
    with pytest.raises(ValueError, match="no samples"):
        H.matvec(torch.zeros(_P(model), dtype=torch.float64))


def test_one_shot_iterator(problem):
    model, batches = problem
    with pytest.raises(TypeError, match="one-shot iterator"):
        ls.hessian(model, iter(batches))
    with pytest.raises(TypeError, match="one-shot iterator"):
        ls.hessian(model, (b for b in batches))


def test_no_trainable_parameters(problem):
    model, batches = problem
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        ls.hessian(model, batches)


def test_params_selecting_nothing(problem):
    model, batches = problem
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        ls.hessian(model, batches, params="decoder")
    with pytest.raises(ValueError, match="selected no trainable parameter"):
        ls.hessian(model, batches, params=lambda name, p: False)
    with pytest.raises(ValueError, match="submodule"):
        ls.hessian(model, batches, params=nn.Linear(2, 2))
    with pytest.raises(TypeError, match="params= entries"):
        ls.hessian(model, batches, params=[3])


def test_frozen_parameter_named_explicitly():
    model, batches = CASES[2].build()
    with pytest.raises(ValueError, match="frozen"):
        ls.hessian(model, batches, CASES[2].loss_fn, params="frozen")


def test_loss_not_scalar(problem):
    model, batches = problem
    H = ls.hessian(model, batches, nn.CrossEntropyLoss(reduction="mean"), max_batches=1)
    H.matvec(torch.zeros(_P(model), dtype=torch.float64))
    H = ls.hessian(
        model, batches, lambda out, y: nn.functional.cross_entropy(out, y, reduction="none")
    )
    with pytest.raises(ValueError, match="scalar"):
        H.matvec(torch.zeros(_P(model), dtype=torch.float64))


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_sum_or_none_reduced_criterion(problem, reduction):
    model, batches = problem
    with pytest.raises(ValueError, match="MEAN loss"):
        ls.hessian(model, batches, nn.CrossEntropyLoss(reduction=reduction))


def test_nan_loss_names_the_batch(problem):
    model, batches = problem
    X = batches[2][0].clone()
    X[0, 0] = float("nan")
    data = [batches[0], batches[1], (X, batches[2][1])]
    for make in (ls.hessian, ls.gauss_newton, ls.fisher):
        with pytest.raises(
            FloatingPointError, match=r"at batch 2 \(0-based\) of the data, the loss is nan"
        ):
            make(model, data).matvec(torch.ones(_P(model), dtype=torch.float64))


def test_inf_loss_names_the_batch(problem):
    model, batches = problem

    def loss_fn(out, y):  # infinite on the 3-sample batch only
        return nn.functional.cross_entropy(out, y) / (y.numel() != 3)

    for make in (ls.hessian, ls.gauss_newton):
        with pytest.raises(FloatingPointError, match=r"at batch 2 .* the loss is inf"):
            make(model, batches, loss_fn).matvec(torch.ones(_P(model), dtype=torch.float64))


def test_infinite_input_gives_a_non_finite_curvature_error(problem):
    model, batches = problem
    X = batches[1][0].clone()
    X[0, 0] = float("inf")  # tanh saturates: the loss stays finite, its derivatives do not
    with pytest.raises(FloatingPointError, match=r"at batch 1 .* curvature product is not finite"):
        ls.hessian(model, [batches[0], (X, batches[1][1])]).matvec(
            torch.ones(_P(model), dtype=torch.float64)
        )


def test_non_finite_curvature_with_finite_loss(problem):
    model, batches = problem

    def batch_loss(m, batch):  # value 0, but d/dθ sqrt(0) is infinite
        out = m(batch[0])
        return torch.sqrt((out - out.detach()).pow(2).mean())

    with pytest.raises(FloatingPointError, match=r"batch 0 .* curvature product is not finite"):
        ls.hessian(model, batches, batch_loss=batch_loss).matvec(
            torch.ones(_P(model), dtype=torch.float64)
        )


def test_wrong_vector_length_dtype_device(problem):
    model, batches = problem
    H = ls.hessian(model, batches)
    P = H.shape[0]
    with pytest.raises(ValueError, match=rf"shape \({P},\)"):
        H.matvec(torch.zeros(P + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=rf"shape \({P}, k\)"):
        H.matmat(torch.zeros(P - 1, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        H.matvec(torch.zeros(P, dtype=torch.float32))
    with pytest.raises(ValueError, match="device"):
        H.matvec(torch.zeros(P, dtype=torch.float64, device="meta"))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        H.matvec([0.0] * P)


def test_parameters_on_several_devices(problem):
    model, batches = problem
    model.net[2].to("meta")
    with pytest.raises(ValueError, match="several devices"):
        ls.hessian(model, batches)


def test_batch_format_the_default_loss_cannot_handle(problem):
    model, batches = problem
    float_targets = [(x, torch.randn(len(x), 1, dtype=torch.float64)) for x, _ in batches]
    with pytest.raises(ValueError, match="Pass loss_fn="):
        ls.hessian(model, float_targets).matvec(torch.zeros(_P(model), dtype=torch.float64))
    with pytest.raises(TypeError, match="batch_loss"):
        ls.hessian(model, [[b[0]] for b in batches]).matvec(
            torch.zeros(_P(model), dtype=torch.float64)
        )


def test_gauss_newton_needs_a_criterion(problem):
    model, batches = problem
    G = ls.gauss_newton(model, batches)
    with pytest.raises(TypeError, match="loss_fn"):
        ls.GaussNewtonOperator(model, batches, batch_loss=lambda m, b: m(b[0]).sum()).matvec(
            torch.zeros(G.shape[0], dtype=torch.float64)
        )


def test_bad_options(problem):
    model, batches = problem
    with pytest.raises(ValueError, match="mode"):
        ls.hessian(model, batches, mode="training")
    with pytest.raises(ValueError, match="backend"):
        ls.hessian(model, batches, backend="jacrev")
    with pytest.raises(ValueError, match="max_batches"):
        ls.hessian(model, batches, max_batches=0)
    with pytest.raises(ValueError, match="either loss_fn or batch_loss"):
        ls.hessian(model, batches, nn.CrossEntropyLoss(), batch_loss=lambda m, b: 0)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        ls.hessian(lambda x: x, batches)
