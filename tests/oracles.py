"""Independent ground truth for curvature tests.

Everything here uses plain autograd on a deep copy of the model (never landscape, never
``torch.func.hessian``, which is wrong through ``layer_norm`` on torch 2.13):
- the exact Hessian, row by row, by double-backward of the full-data mean loss;
- the Gauss-Newton matrix from explicit Jacobians and output Hessians;
- the empirical Fisher from a Python loop of per-sample gradients;
- central finite differences of the gradient (to check the Hessian oracle itself).
"""

from __future__ import annotations

import copy
import math

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def _params(model, names):
    table = dict(model.named_parameters())
    return [table[n] for n in names]


def _prepare(model, names, train_bn=False):
    model = copy.deepcopy(model)
    model.eval()
    if train_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train()
    for p in model.parameters():
        p.requires_grad_(False)
    params = _params(model, names)
    for p in params:
        p.requires_grad_(True)
    return model, params


def _flatten(grads, params):
    """One flat vector of the gradients, zeros for a parameter the output does not use."""
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
    )


def _rows(flat, params):
    """The Jacobian of ``flat`` (a graph on ``params``), row by row; zero rows where an entry
    does not depend on them."""
    rows = []
    for i in range(flat.numel()):
        if not flat[i].requires_grad:
            rows.append(
                torch.zeros(sum(p.numel() for p in params), dtype=flat.dtype, device=flat.device)
            )
            continue
        row = torch.autograd.grad(flat[i], params, retain_graph=True, allow_unused=True)
        rows.append(_flatten(row, params))
    return torch.stack(rows)


def full_loss(model, batches, loss_of_batch):
    """Sample-weighted mean loss over all batches: sum_b n_b L_b / N."""
    total, count = 0.0, 0
    for batch in batches:
        n = batch["labels"].shape[0] if isinstance(batch, dict) else batch[-1].shape[0]
        total = total + n * loss_of_batch(model, batch)
        count += n
    return total / count


def exact_hessian(model, batches, loss_of_batch, names, train_bn=False):
    """Dense Hessian of the mean loss w.r.t. the named parameters, by double-backward rows."""
    model, params = _prepare(model, names, train_bn)
    with sdpa_kernel(SDPBackend.MATH):
        loss = full_loss(model, batches, loss_of_batch)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        return _rows(_flatten(grads, params), params)


def gradient(model, batches, loss_of_batch, names):
    model, params = _prepare(model, names)
    with sdpa_kernel(SDPBackend.MATH):
        loss = full_loss(model, batches, loss_of_batch)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return _flatten(grads, params)


def finite_difference_hvp(model, batches, loss_of_batch, names, v, h=1e-5):
    """(g(theta + h v) - g(theta - h v)) / 2h, in float64."""
    sizes = [math.prod(p.shape) for p in _params(model, names)]

    def shifted(sign):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for p, part in zip(_params(m, names), torch.split(v, sizes)):
                p.add_(sign * h * part.view_as(p))
        return gradient(m, batches, loss_of_batch, names)

    return (shifted(1.0) - shifted(-1.0)) / (2 * h)


def exact_gauss_newton(model, batches, forward, criterion, names):
    """sum_b n_b/N J_b^T H_b J_b with J_b by reverse-mode rows and H_b by double-backward rows."""
    model, params = _prepare(model, names)
    total = None
    count = 0
    with sdpa_kernel(SDPBackend.MATH):
        for batch in batches:
            outputs = forward(model, batch)
            targets = batch[-1]
            J = _rows(outputs.reshape(-1), params)
            out = outputs.detach().requires_grad_(True)
            g = torch.autograd.grad(criterion(out, targets), out, create_graph=True)[0].reshape(-1)
            H_out = torch.stack(
                [
                    torch.autograd.grad(g[i], out, retain_graph=True)[0].reshape(-1)
                    for i in range(g.numel())
                ]
            )
            n = targets.shape[0]
            term = n * J.T @ H_out @ J
            total = term if total is None else total + term
            count += n
    return total / count


def exact_empirical_fisher(model, batches, sample_loss, names):
    """(1/N) sum_i g_i g_i^T with g_i from one autograd call per sample."""
    model, params = _prepare(model, names)
    grads = []
    with sdpa_kernel(SDPBackend.MATH):
        for batch in batches:
            n = batch[-1].shape[0]
            for i in range(n):
                sample = tuple(t[i : i + 1] for t in batch)
                g = torch.autograd.grad(sample_loss(model, sample), params, allow_unused=True)
                grads.append(_flatten(g, params))
    G = torch.stack(grads)
    return G.T @ G / G.shape[0]
