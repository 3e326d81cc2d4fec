"""Set-ups shared by the optimizer and tracker tests: small float64 models with their data, the
torch.optim optimizers by name, a third-party optimizer landscape does not know, and the dense
gradient and Hessian of a small model by plain double backward (never landscape).

Every builder seeds itself, so each call gives the same model and data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DTYPE = torch.float64

# Every torch.optim optimizer of torch 2.13 that takes dense gradients (SparseAdam aside).
TORCH_OPTIMIZERS = (
    "Adafactor", "Adadelta", "Adagrad", "Adam", "Adamax", "AdamW", "ASGD", "LBFGS", "Muon",
    "NAdam", "RAdam", "RMSprop", "Rprop", "SGD",
)  # fmt: skip


def torch_optimizer_classes() -> dict[str, type]:
    """Every ``torch.optim.Optimizer`` class torch exports, the base class included, by name."""
    return {
        name: getattr(torch.optim, name)
        for name in torch.optim.__all__
        if isinstance(getattr(torch.optim, name), type)
        and issubclass(getattr(torch.optim, name), torch.optim.Optimizer)
    }


def matrices(model: nn.Module) -> list[nn.Parameter]:
    """The model's matrix parameters: all that torch 2.13's Muon accepts."""
    return [p for p in model.parameters() if p.dim() == 2]


def torch_optimizer(name: str, model: nn.Module, **settings) -> torch.optim.Optimizer:
    """``torch.optim.<name>`` over the model's parameters (Muon: over its matrices)."""
    params = matrices(model) if name == "Muon" else model.parameters()
    return getattr(torch.optim, name)(params, **settings)


def tanh_classifier(widths=(3, 4, 2), n=40, seed=1):
    """Linear-Tanh-Linear in float64 with ``n`` random inputs and labels, from torch's seed."""
    torch.manual_seed(seed)
    inputs, hidden, classes = widths
    model = nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, classes))
    model = model.to(DTYPE)
    X = torch.randn(n, inputs, dtype=DTYPE)
    y = torch.randint(0, classes, (n,))
    return model, X, y


def sparse_embedding_regression(vocab, dim, n):
    """A sparse embedding of two tokens, flattened, into one linear output, with ``n`` rows."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Embedding(vocab, dim, sparse=True), nn.Flatten(), nn.Linear(2 * dim, 1)
    )
    model = model.to(DTYPE)
    X = torch.randint(0, vocab, (n, 2), generator=gen)
    Y = torch.randn(n, 1, generator=gen, dtype=DTYPE)
    return model, X, Y


def muon_with_adamw(model, X, y, steps):
    """Muon (lr 0.02) on the matrices, AdamW (lr 1e-3) on the rest, after ``steps`` full-batch
    cross-entropy steps."""
    muon = torch.optim.Muon(matrices(model), lr=0.02)
    adamw = torch.optim.AdamW([p for p in model.parameters() if p.dim() != 2], lr=1e-3)
    for _ in range(steps):
        muon.zero_grad()
        adamw.zero_grad()
        F.cross_entropy(model(X), y).backward()
        muon.step()
        adamw.step()
    return muon, adamw


class GradientDescent(torch.optim.Optimizer):
    """A third-party optimizer landscape does not know: theta -= lr * direction(gradient)."""

    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    @staticmethod
    def direction(grad):
        return grad

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(self.direction(p.grad), alpha=-group["lr"])


class SignDescent(GradientDescent):
    """Lion-like: a step along the sign of the gradient."""

    direction = staticmethod(torch.sign)


def gradient_and_hessian(model, loss_fn, X, Y):
    """The flat gradient and the dense Hessian of ``loss_fn(model(X), Y)`` over every parameter,
    by double-backward rows."""
    params = list(model.parameters())
    loss = loss_fn(model(X), Y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    rows = [
        torch.cat([r.reshape(-1) for r in torch.autograd.grad(flat[i], params, retain_graph=True)])
        for i in range(flat.numel())
    ]
    return flat.detach(), torch.stack(rows).detach()


# -- the tracker's quadratic ----------------------------------------------------------------------
DIM, N = 6, 24


def half_mse(out, y):
    return 0.5 * F.mse_loss(out, y)


def quadratic(seed=0, batches=1):
    """A linear model whose loss mean_i ½(x_iᵀθ)² is ½θᵀAθ with A = XᵀX/n: the model, its data
    (one ``(X, Y)`` or a list of ``batches`` of them) and A."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, DIM, generator=g, dtype=DTYPE) * torch.linspace(0.5, 2.0, DIM)
    Y = torch.zeros(N, 1, dtype=DTYPE)
    model = nn.Linear(DIM, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, DIM, generator=g, dtype=DTYPE))
    A = X.T @ X / N
    size = N // batches
    data = [(X[i : i + size], Y[i : i + size]) for i in range(0, N, size)]
    return model, (data if batches > 1 else (X, Y)), A


def top(A):
    """The largest eigenvalue of the symmetric matrix A."""
    return float(torch.linalg.eigvalsh(A)[-1])
