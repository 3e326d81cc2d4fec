"""Bitwise snapshots of everything about a model that landscape promises not to touch."""

import torch


def snapshot(model):
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "grad_fn": {
            n: None if p.grad is None else p.grad.grad_fn for n, p in model.named_parameters()
        },
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "training": [m.training for m in model.modules()],
    }


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after["requires_grad"] == before["requires_grad"]
    assert after["training"] == before["training"]
    for key in ("params", "buffers"):
        assert after[key].keys() == before[key].keys()
        for n in before[key]:
            assert torch.equal(after[key][n], before[key][n]), f"{key} {n} changed"
    for n, g in before["grads"].items():
        if g is None:
            assert after["grads"][n] is None, f".grad of {n} was set"
        else:
            assert torch.equal(after["grads"][n], g), f".grad of {n} changed"
        assert after["grad_fn"][n] is None, f".grad of {n} holds a graph"
