"""Models nobody here wrote: tiny Hugging Face models built offline from configs, and their truth.

Every model is a `transformers` class built from a small config (no download), in float64 and
eval mode, with the batches its users pass: right-padded, uneven token batches with
``attention_mask`` and ``labels == -100`` on padding for the causal language models (GPT-2,
Llama with grouped-query attention), masked sequences for BERT classification, images for
ViT and a BatchNorm ResNet with non-trivial running statistics.

The truth is the loss the model itself trains with, ``model(**batch).loss``, weighted over
batches as a trainer does (scored tokens for language models, samples otherwise), and plain
autograd on it — never landscape:

- ``truth_hvp``: double-backward of the weighted mean loss;
- ``truth_ggn``: explicit ``J^T (d^2 loss / d logits^2) J v`` with the model's own loss
  function applied to its logits (``model.loss_function`` for heads that have one);
- ``truth_fisher``: a loop of per-sample gradients of ``model(**sample).loss``.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


@dataclass
class ZooCase:
    id: str
    model: Any
    batches: list[dict[str, torch.Tensor]]
    task: str

    def weight(self, batch: dict[str, torch.Tensor]) -> int:
        labels = batch["labels"]
        if self.task == "causal_lm":
            return int((labels[:, 1:] != -100).sum())
        return int(labels.shape[0])


def _tokens(generator, sizes, length, vocab, pads):
    """One right-padded token batch: ``pads[i]`` padding positions at the end of row i."""
    ids = torch.randint(0, vocab, (sizes, length), generator=generator)
    mask = torch.ones(sizes, length, dtype=torch.long)
    for i, p in enumerate(pads):
        if p:
            mask[i, length - p :] = 0
    return ids, mask


def _lm_batches(generator, vocab):
    out = []
    for size, length, pads in ((3, 9, (0, 4, 2)), (2, 6, (0, 3)), (1, 7, (1,))):
        ids, mask = _tokens(generator, size, length, vocab, pads)
        labels = ids.masked_fill(mask == 0, -100)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def _built(model_class, config):
    """``model_class(config)`` from torch's seed 0, in float64 and eval mode."""
    torch.manual_seed(0)
    return model_class(config).double().eval()


def _causal_lm(case_id, model_class, config, seed):
    model = _built(model_class, config)
    batches = _lm_batches(torch.Generator().manual_seed(seed), config.vocab_size)
    return ZooCase(case_id, model, batches, "causal_lm")


def gpt2_config(vocab_size=23):
    """A two-layer GPT-2 of width 8 without dropout."""
    return transformers.GPT2Config(
        vocab_size=vocab_size, n_positions=16, n_embd=8, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip


def gpt2() -> ZooCase:
    return _causal_lm("gpt2", transformers.GPT2LMHeadModel, gpt2_config(), seed=1)


def llama() -> ZooCase:
    config = transformers.LlamaConfig(
        vocab_size=19, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return _causal_lm("llama", transformers.LlamaForCausalLM, config, seed=2)


def bert() -> ZooCase:
    config = transformers.BertConfig(
        vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=12, max_position_embeddings=16, num_labels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = _built(transformers.BertForSequenceClassification, config)
    g = torch.Generator().manual_seed(3)
    batches = []
    for size, length, pads in ((4, 7, (0, 2, 3, 1)), (3, 5, (0, 1, 2))):
        ids, mask = _tokens(g, size, length, 20, pads)
        labels = torch.randint(0, 3, (size,), generator=g)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return ZooCase("bert", model, batches, "sequence_classification")


def _images(generator, sizes, classes):
    return [
        {
            "pixel_values": torch.randn(n, 3, 8, 8, generator=generator, dtype=torch.float64),
            "labels": torch.randint(0, classes, (n,), generator=generator),
        }
        for n in sizes
    ]


def vit() -> ZooCase:
    config = transformers.ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=8, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=12, num_labels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = _built(transformers.ViTForImageClassification, config)
    return ZooCase("vit", model, _images(torch.Generator().manual_seed(4), (5, 3), 3), "image")


def resnet() -> ZooCase:
    config = transformers.ResNetConfig(
        num_channels=3, embedding_size=4, hidden_sizes=[4, 6], depths=[1, 1],
        layer_type="basic", num_labels=3, downsample_in_first_stage=False,
    )  # fmt: skip
    model = _built(transformers.ResNetForImageClassification, config)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():  # non-trivial running statistics
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.num_batches_tracked.fill_(7)
    return ZooCase("resnet", model, _images(g, (5, 3), 3), "image")


ZOO = {"gpt2": gpt2, "llama": llama, "bert": bert, "vit": vit, "resnet": resnet}


# -- the truth ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _plain(model):
    """A private copy with its parameters as autograd leaves, under the math attention kernel."""
    clone = copy.deepcopy(model).eval()
    params = [p for p in clone.parameters() if p.requires_grad]
    with sdpa_kernel(SDPBackend.MATH):
        yield clone, params


def _flat(tensors, params):
    return torch.cat(
        [(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(tensors, params)]
    )


def truth_loss(case: ZooCase) -> float:
    """The weighted mean of the model's own loss over the batches."""
    with torch.no_grad(), _plain(case.model) as (model, _):
        total = sum(case.weight(b) * float(model(**b).loss) for b in case.batches)
    return total / sum(case.weight(b) for b in case.batches)


def truth_hvp(case: ZooCase, V: torch.Tensor) -> torch.Tensor:
    """H V for the weighted mean of ``model(**batch).loss``, by plain double-backward."""
    with _plain(case.model) as (model, params):
        total = torch.zeros_like(V)
        weight = 0
        for batch in case.batches:
            w = case.weight(batch)
            loss = model(**batch).loss
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            g = _flat(grads, params)
            for j in range(V.shape[1]):
                hv = torch.autograd.grad(g @ V[:, j], params, retain_graph=True, allow_unused=True)
                total[:, j] += w * _flat(hv, params)
            weight += w
    return total / weight


def _head_loss(model, logits, labels):
    """The model's own loss as a function of its logits (Hugging Face's loss functions)."""
    if isinstance(model, transformers.BertForSequenceClassification):
        return torch.nn.functional.cross_entropy(logits.view(-1, model.num_labels), labels.view(-1))
    if isinstance(model, (transformers.GPT2LMHeadModel, transformers.LlamaForCausalLM)):
        return model.loss_function(logits=logits, labels=labels, vocab_size=model.config.vocab_size)
    return model.loss_function(labels, logits, model.config)


def truth_ggn(case: ZooCase, v: torch.Tensor) -> torch.Tensor:
    """G v = sum_b w_b J_b^T H_b J_b v / W, with explicit Jacobian-vector products."""
    with _plain(case.model) as (model, params):
        total = torch.zeros_like(v)
        weight = 0
        for batch in case.batches:
            w = case.weight(batch)
            inputs = {k: t for k, t in batch.items() if k != "labels"}
            logits = model(**inputs).logits
            # J v by the double-vjp trick: u -> J^T u is linear, its vjp gives J v.
            u = torch.zeros_like(logits, requires_grad=True)
            jtu = torch.autograd.grad(logits, params, u, create_graph=True, allow_unused=True)
            jv = torch.autograd.grad(_flat(jtu, params) @ v, u)[0]
            out = logits.detach().requires_grad_(True)
            loss = _head_loss(model, out, batch["labels"])
            (dl,) = torch.autograd.grad(loss, out, create_graph=True)
            (hjv,) = torch.autograd.grad((dl * jv).sum(), out)
            jt = torch.autograd.grad(logits, params, hjv.to(logits.dtype), allow_unused=True)
            total += w * _flat(jt, params)
            weight += w
    return total / weight


def truth_fisher(case: ZooCase, v: torch.Tensor) -> torch.Tensor:
    """F v = sum_i w_i g_i (g_i . v) / W over samples, by a loop of per-sample gradients."""
    with _plain(case.model) as (model, params):
        total = torch.zeros_like(v)
        weight = 0
        for batch in case.batches:
            for i in range(batch["labels"].shape[0]):
                sample = {k: t[i : i + 1] for k, t in batch.items()}
                w = case.weight(sample)
                if w == 0:
                    continue
                g = _flat(
                    torch.autograd.grad(model(**sample).loss, params, allow_unused=True), params
                )
                total += w * g * (g @ v)
                weight += w
    return total / weight
