"""Hugging Face conventions: the model's own loss, token weights, inferred criteria, errors.

The truth is always the model's own ``model(**batch).loss`` (tests/zoo.py), never
landscape's reading of it; each test also shows that the mistake it guards against would
be caught (the alternative differs by far more than the tolerance).
"""

from __future__ import annotations

import typing
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import landscape as ls
from landscape.losses import (
    CausalLMLoss,
    Objective,
    TokenClassificationLoss,
    infer_task,
)

zoo = pytest.importorskip("zoo")
transformers = zoo.transformers


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.fixture(scope="module")
def gpt2():
    return zoo.gpt2()


def _probe(model, k=2):
    P = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return torch.randn(P, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


# -- weights ------------------------------------------------------------------------------------


def test_padded_batches_weigh_their_scored_tokens_and_count_overrides(gpt2):
    V = _probe(gpt2.model)
    tokens = zoo.truth_hvp(gpt2, V)
    by_samples = zoo.ZooCase("gpt2", gpt2.model, gpt2.batches, "samples")
    samples = zoo.truth_hvp(by_samples, V)
    assert _rel(samples, tokens) > 0.05  # the weighting matters on these batches
    H = ls.hessian(gpt2.model, gpt2.batches)
    assert _rel(H @ V, tokens) < 1e-8
    assert H.total_weight == 18 + 7 + 5  # labels[:, 1:] != -100 in the three batches
    counted = ls.hessian(gpt2.model, gpt2.batches, count=lambda b: b["labels"].shape[0])
    assert _rel(counted @ V, samples) < 1e-8
    assert counted.total_weight == 6


def test_causal_lm_loss_is_shifted_and_matches_the_model(gpt2):
    for batch in gpt2.batches:
        own = float(gpt2.model(**batch).loss)
        logits = gpt2.model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        assert float(CausalLMLoss()(logits, batch["labels"])) == pytest.approx(own, rel=1e-6)
        unshifted = float(TokenClassificationLoss()(logits, batch["labels"]))
        assert abs(unshifted - own) > 1e-2 * own  # the unshifted loss is another function
    # An explicit criterion gives the same Hessian as the model's own loss (float32 inside).
    V = _probe(gpt2.model)
    H = ls.hessian(gpt2.model, gpt2.batches, CausalLMLoss())
    assert _rel(H @ V, zoo.truth_hvp(gpt2, V)) < 1e-5


def test_next_token_accuracy_counts_scored_tokens(gpt2):
    correct = scored = 0
    with torch.no_grad():
        for batch in gpt2.batches:
            logits = gpt2.model(**batch).logits
            target = batch["labels"][:, 1:]
            keep = target != -100
            correct += int(((logits[:, :-1].argmax(-1) == target) & keep).sum())
            scored += int(keep.sum())
    assert ls.evaluate(gpt2.model, gpt2.batches)["accuracy"] == correct / scored


def test_the_model_takes_num_items_in_batch():
    class RecordingLMHeadModel(transformers.GPT2LMHeadModel):
        seen: typing.ClassVar[list] = []

        def forward(self, **kwargs):
            self.seen.append(kwargs.get("num_items_in_batch"))
            return super().forward(**kwargs)

    case = zoo.gpt2()
    model = RecordingLMHeadModel(case.model.config).double().eval()
    assert infer_task(model).num_items
    ls.hessian(model, case.batches, backend="double_backward") @ _probe(model, 1)
    assert [int(n) for n in model.seen] == [18, 7, 5]


# -- inferred criteria ----------------------------------------------------------------------------


def _bert_config(**kw):
    return transformers.BertConfig(
        vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=12, max_position_embeddings=16, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, **kw,
    )  # fmt: skip


def _bert_batches(labels_of, g):
    out = []
    for size, length in ((3, 6), (2, 4)):
        ids = torch.randint(1, 20, (size, length), generator=g)
        mask = torch.ones(size, length, dtype=torch.long)
        mask[0, -2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels_of(size, length)})
    return out


def _heads():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    yield (
        "regression",
        transformers.BertForSequenceClassification(_bert_config(num_labels=1)),
        _bert_batches(lambda n, t: torch.randn(n, generator=g, dtype=torch.float64), g),
        "sequence_classification",
    )
    yield (
        "multi_label",
        transformers.BertForSequenceClassification(_bert_config(num_labels=3)),
        _bert_batches(lambda n, t: (torch.rand(n, 3, generator=g) > 0.5).double(), g),
        "sequence_classification",
    )
    tokens = torch.randint(0, 3, (3, 6), generator=g).masked_fill(torch.rand(3, 6) > 0.7, -100)
    yield (
        "token_classification",
        transformers.BertForTokenClassification(_bert_config(num_labels=3)),
        _bert_batches(lambda n, t: tokens[:n, :t].clone(), g),
        "token_classification",
    )
    masked = torch.randint(0, 20, (3, 6), generator=g).masked_fill(torch.rand(3, 6) > 0.4, -100)
    masked[:, 0] = 5
    yield (
        "masked_lm",
        transformers.BertForMaskedLM(_bert_config()),
        _bert_batches(lambda n, t: masked[:n, :t].clone(), g),
        "masked_lm",
    )


@pytest.mark.parametrize("head", list(_heads()), ids=lambda h: h[0])
def test_inferred_criteria_reproduce_the_heads_own_loss(head):
    _, model, batches, task = head
    model = model.double().eval()
    objective = Objective(model=model)
    assert objective.task.name == task
    for batch in batches:
        own = model(**batch).loss
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        ours = objective.criterion(logits, batch["labels"])
        assert float(ours) == pytest.approx(float(own), rel=1e-6)
        scored = (batch["labels"] != -100).sum() if task != "sequence_classification" else 0
        assert objective.weight(batch) == (scored or batch["labels"].shape[0])
    # Curvatures that need the criterion run, and the Gauss-Newton of the regression head
    # is positive semi-definite.
    G = ls.gauss_newton(model, batches)
    v = _probe(model, 1)[:, 0]
    assert float(v @ (G @ v)) >= -1e-10


def test_problem_type_set_by_the_head_is_restored():
    model = zoo.bert().model
    assert model.config.problem_type is None
    ls.hessian(model, zoo.bert().batches) @ _probe(model, 1)
    assert model.config.problem_type is None


# -- bad input ----------------------------------------------------------------------------------


class _Head(nn.Module):
    """Dict batches; returns logits and, when asked, its own loss."""

    def __init__(self, smoothing=0.0):
        super().__init__()
        self.lin = nn.Linear(4, 3).double()
        self.smoothing = smoothing

    def forward(self, x, labels=None):
        logits = self.lin(x)
        loss = None
        if labels is not None and self.smoothing >= 0:
            loss = F.cross_entropy(logits, labels, label_smoothing=self.smoothing)
        return SimpleNamespace(logits=logits, loss=loss)


def _dict_batches(labels=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g) if labels is None else labels
    return [{"x": x[:4], "labels": y[:4]}, {"x": x[4:], "labels": y[4:]}]


def test_a_criterion_that_differs_from_the_models_loss_is_an_error():
    model = _Head(smoothing=0.2)
    H = ls.hessian(model, _dict_batches())  # the model's own loss: fine
    assert H.shape == (15, 15)
    with pytest.raises(ValueError, match="loss_fn=") as error:
        ls.gauss_newton(model, _dict_batches()) @ torch.ones(15, dtype=torch.float64)
    assert "the model's loss is" in str(error.value)
    # Without smoothing the default criterion is the model's loss, and is used.
    ls.gauss_newton(_Head(), _dict_batches()) @ torch.ones(15, dtype=torch.float64)


def test_no_loss_and_no_criterion_is_an_error_naming_loss_fn():
    model = _Head(smoothing=-1.0)  # returns no .loss
    batches = _dict_batches(labels=torch.randn(6, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="Pass loss_fn="):
        ls.hessian(model, batches) @ torch.ones(15, dtype=torch.float64)
    no_labels = [{"x": b["x"]} for b in batches]
    with pytest.raises(TypeError, match=r"has no \.loss"):
        ls.hessian(model, no_labels) @ torch.ones(15, dtype=torch.float64)


def test_batches_of_weight_zero_are_errors_that_say_why(gpt2):
    v = _probe(gpt2.model, 1)
    with pytest.raises(ValueError, match="count= returned 0"):
        ls.hessian(gpt2.model, gpt2.batches, count=lambda b: 0) @ v
    ignored = [{**b, "labels": torch.full_like(b["labels"], -100)} for b in gpt2.batches]
    with pytest.raises(ValueError, match=r"labels are ignored \(-100\)"):
        ls.hessian(gpt2.model, ignored) @ v
    with pytest.raises(ValueError, match="non-negative"):
        ls.hessian(gpt2.model, gpt2.batches, count=lambda b: -1) @ v


def test_a_batch_with_nothing_scored_is_skipped(gpt2):
    v = _probe(gpt2.model, 1)
    ignored = {**gpt2.batches[1], "labels": torch.full_like(gpt2.batches[1]["labels"], -100)}
    H = ls.hessian(gpt2.model, [gpt2.batches[0], ignored, gpt2.batches[2]])
    kept = zoo.ZooCase("gpt2", gpt2.model, [gpt2.batches[0], gpt2.batches[2]], "causal_lm")
    assert _rel(H @ v, zoo.truth_hvp(kept, v)) < 1e-8
