"""Test problems: small models covering the layers and batch formats users have.

Every case has uneven batches (a partial last batch) and smooth activations where finite
differences are used. Each case gives the oracle its own loss so the ground truth never
goes through landscape's loss resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))

    def forward(self, x):
        return self.net(x)


class BNConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3 * 3 * 3, 4)

    def forward(self, x):
        return self.head(torch.tanh(self.bn(self.conv(x))).flatten(1))


class FrozenShared(nn.Module):
    """A frozen layer, and one Linear used at two call sites (a tied weight)."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.tanh(self.shared(x))
        x = torch.tanh(self.frozen(x))
        x = torch.tanh(self.shared(x))
        return self.head(x)


class LNAttention(nn.Module):
    """Hand-written single-head attention followed by LayerNorm."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(6, 18)
        self.ln = nn.LayerNorm(6)
        self.out = nn.Linear(6, 4)

    def forward(self, x):
        q, k, v = self.qkv(x).split(6, -1)
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(6), -1)
        return self.out(self.ln(a @ v).mean(1))


class Encoder(nn.Module):
    """A real nn.TransformerEncoderLayer (fused attention kernel on CPU by default)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, batch_first=True)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(self.enc(x).mean(1))


class DictModel(nn.Module):
    """Hugging Face style: model(**batch) returns an object with .loss and .logits."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(5, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, features, labels=None):
        logits = self.head(torch.tanh(self.body(features)))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return SimpleNamespace(loss=loss, logits=logits)


def _split(tensors, sizes):
    out, start = [], 0
    for s in sizes:
        out.append(tuple(t[start : start + s] for t in tensors))
        start += s
    return out


def _ce(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def _mse(model, batch):
    return F.mse_loss(model(batch[0]), batch[1])


@dataclass
class Case:
    id: str
    make_model: Callable[[], nn.Module]
    make_inputs: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    oracle_loss: Callable[[nn.Module, Any], torch.Tensor]
    sizes: tuple[int, ...] = (10, 10, 3)
    loss_fn: Any = None
    criterion: Callable | None = None  # for the Gauss-Newton oracle
    dict_batches: bool = False

    def build(self, dtype=torch.float64, device="cpu", seed=0):
        torch.manual_seed(seed)
        model = self.make_model().eval()
        for m in model.modules():  # non-trivial running statistics
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
        model = model.to(dtype=dtype, device=device)
        g = torch.Generator().manual_seed(seed + 1)
        X, y = self.make_inputs(g)
        X = X.to(dtype=dtype, device=device)
        y = (y.to(dtype) if y.is_floating_point() else y).to(device)
        batches = _split((X, y), self.sizes)
        if self.dict_batches:
            batches = [{"features": x, "labels": t} for x, t in batches]
        return model, batches

    def forward(self, model, batch):
        return model(batch[0])


def _classification(shape, classes, n=23):
    def make(g):
        return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)

    return make


def _regression(shape, outputs, n=23):
    def make(g):
        return torch.randn(n, *shape, generator=g), torch.randn(n, outputs, generator=g)

    return make


CASES = [
    Case("mlp_tanh", MLP, _classification((5,), 3), _ce, criterion=F.cross_entropy),
    Case(
        "cnn_batchnorm",
        BNConvNet,
        _classification((2, 5, 5), 4),
        _ce,
        criterion=F.cross_entropy,
    ),
    Case(
        "frozen_shared_mse",
        FrozenShared,
        _regression((4,), 2),
        _mse,
        loss_fn=nn.MSELoss(),
        criterion=F.mse_loss,
    ),
    Case(
        "layernorm_attention",
        LNAttention,
        _classification((5, 6), 4),
        _ce,
        criterion=F.cross_entropy,
    ),
    Case("transformer_layer", Encoder, _classification((3, 4), 3), _ce, criterion=F.cross_entropy),
    Case(
        "dict_batch_own_loss",
        DictModel,
        _classification((5,), 3),
        lambda model, batch: model(**batch).loss,
        dict_batches=True,
    ),
]
CASE_IDS = [c.id for c in CASES]
CRITERION_CASES = [c for c in CASES if c.criterion is not None]


_HESSIAN_CACHE: dict = {}


def cached_exact_hessian(case, names, *, train_bn=False):
    """The float64 exact Hessian of a case (built once per test session: it costs P backwards)."""
    from oracles import exact_hessian

    key = (case.id, tuple(names), train_bn)
    if key not in _HESSIAN_CACHE:
        model, batches = case.build()
        _HESSIAN_CACHE[key] = exact_hessian(
            model, batches, case.oracle_loss, list(names), train_bn=train_bn
        )
    return _HESSIAN_CACHE[key]
