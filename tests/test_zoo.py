"""landscape on models nobody here wrote: Hugging Face GPT-2, Llama, BERT, ViT and ResNet.

Truth (tests/zoo.py): plain autograd on the loss each model trains with,
``model(**batch).loss``, weighted over batches as a trainer does (scored tokens for language
models). Never landscape's own reading of the loss.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from state import assert_unchanged, snapshot

import landscape as ls

zoo = pytest.importorskip("zoo")

IDS = list(zoo.ZOO)


@pytest.fixture(scope="module", params=IDS)
def case(request):
    return zoo.ZOO[request.param]()


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _probe(case, k=1, seed=0):
    P = sum(p.numel() for p in case.model.parameters() if p.requires_grad)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(P, k, generator=g, dtype=torch.float64)


def test_hessian_products_are_exact(case):
    before = snapshot(case.model)
    H = ls.hessian(case.model, case.batches)
    V = _probe(case, 3)
    assert _rel(H @ V, zoo.truth_hvp(case, V)) < 1e-8
    assert _rel(H @ V[:, 0], zoo.truth_hvp(case, V[:, :1])[:, 0]) < 1e-8
    assert H.total_weight == sum(case.weight(b) for b in case.batches)
    assert_unchanged(case.model, before)


def test_input_label_pairs_use_the_models_own_loss(case):
    # (inputs, labels) pairs, what a plain DataLoader yields, for heads that take labels:
    # their loss is the model's own (Hugging Face computes it in float32 whatever the
    # model's dtype), not landscape's re-derivation (5e-8 off on a float64 GPT-2 before).
    first = next(k for k in ("input_ids", "pixel_values") if k in case.batches[0])
    dicts = [{first: b[first], "labels": b["labels"]} for b in case.batches]
    pairs = [(b[first], b["labels"]) for b in case.batches]
    truth = zoo.ZooCase(case.id, case.model, dicts, case.task)
    V = _probe(case, 2)
    assert _rel(ls.hessian(case.model, pairs) @ V, zoo.truth_hvp(truth, V)) < 1e-8


def test_gauss_newton_products_match_the_models_own_loss_function(case):
    # The truth applies Hugging Face's loss functions (float32 for language-model heads,
    # whatever the model's dtype) to the logits; ours runs the inferred criterion in
    # float64: they agree to float32 rounding.
    before = snapshot(case.model)
    G = ls.gauss_newton(case.model, case.batches)
    v = _probe(case)[:, 0]
    assert _rel(G @ v, zoo.truth_ggn(case, v)) < 1e-5
    assert_unchanged(case.model, before)


def test_fisher_products_weigh_samples_by_their_tokens(case):
    F = ls.fisher(case.model, case.batches)
    v = _probe(case)[:, 0]
    assert _rel(F @ v, zoo.truth_fisher(case, v)) < 1e-8


def test_loss_and_surface_origin_are_the_models_own_loss(case):
    truth = zoo.truth_loss(case)
    assert ls.evaluate(case.model, case.batches)["value"] == pytest.approx(truth, rel=1e-10)
    dirs = ls.random_directions(case.model, n=1, seed=0)
    s = ls.surface(
        case.model,
        case.batches,
        directions=dirs,
        coords=[-0.5, 0.0, 0.5],
        progress=False,
    )
    assert s.origin_loss == pytest.approx(truth, rel=1e-10)
    assert s.loss[1] == s.origin_loss


def test_eigenvalues_and_trace_match_an_independent_solver(case):
    H = ls.hessian(case.model, case.batches)
    P = H.shape[0]
    truth = scipy.sparse.linalg.LinearOperator(
        (P, P),
        matvec=lambda x: zoo.truth_hvp(case, torch.as_tensor(x).reshape(P, 1))[:, 0].numpy(),
        dtype=np.float64,
    )
    exact = scipy.sparse.linalg.eigsh(truth, k=2, which="LA", tol=1e-10)[0][::-1]
    ours = ls.eigenvalues(H, k=2, tol=1e-8, seed=0)
    np.testing.assert_allclose(ours.values.numpy(), exact, rtol=1e-6)
    # Same probes (seeded on the CPU) through the truth operator and ours. (Hugging Face
    # language-model heads compute their loss in float32: products agree to ~1e-8.)
    np.testing.assert_allclose(
        ls.trace(H, num_matvecs=12, seed=3).value,
        ls.trace(truth, num_matvecs=12, seed=3).value,
        rtol=1e-7,
    )


@pytest.mark.parametrize("name", IDS)
def test_analyze_finishes_and_leaves_the_model_unchanged(name):
    case = zoo.ZOO[name]()
    before = snapshot(case.model)
    report = ls.analyze(case.model, case.batches, progress=False)
    assert report.loss.value == pytest.approx(zoo.truth_loss(case), rel=1e-10)
    assert bool(report.eigenvalues.top.values.isfinite().all())
    assert np.isfinite(report.trace.value)
    assert report.findings() and report.summary()
    assert_unchanged(case.model, before)


# compare runs analyze on each model: a language model and the BatchNorm CNN cover its paths
@pytest.mark.parametrize("name", ["gpt2", "resnet"])
def test_compare_finishes_and_leaves_the_models_unchanged(name):
    case = zoo.ZOO[name]()
    other = zoo.ZOO[name]()
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before = snapshot(case.model)
    comparison = ls.compare({"a": case.model, "b": other.model}, case.batches, progress=False)
    assert np.isfinite(comparison.interpolation.barrier)
    assert {f.topic for f in comparison.findings()} >= {"sharper_minimum", "connectivity"}
    assert_unchanged(case.model, before)
