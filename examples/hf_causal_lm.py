"""A tiny Hugging Face GPT-2 on a synthetic grammar: its curvature and stable learning rate.

A `transformers.GPT2LMHeadModel` (2 blocks, width 64, about 0.1M parameters, built from a
config: nothing is downloaded) is trained with AdamW on sentences of a small probabilistic
grammar ("the red cat chases a frog."), tokenized per character by the code below. The
batches are what a Hugging Face user passes: variable-length sequences, right-padded, with
``attention_mask`` and ``labels = input_ids`` set to -100 on padding.

landscape then uses the model's own ``model(**batch).loss`` and weighs every batch by its
scored tokens, ``(labels[:, 1:] != -100).sum()``, so each mean over the data is the token
mean the trainer minimized. The script prints the loss and next-token accuracy
(`ls.evaluate`), the top Hessian eigenvalues, the SLQ spectral density, per-layer Hessian
traces summed per GPT-2 block (`ls.layerwise`), and the largest stable learning rate for
AdamW from its own second-moment state (`ls.max_learning_rate`) beside the learning rate it
was trained with.

Run: ``.venv/bin/python examples/hf_causal_lm.py [--quick] [--no-figure]``
(about 35 s on one CPU thread; ``--quick``: fewer steps, sequences, probes and batches,
about 12 s). Writes figures/hf_causal_lm.png.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
import transformers

import landscape as ls

FIGURES = Path(__file__).resolve().parents[1] / "figures"

# -- the corpus: a small probabilistic grammar ---------------------------------------------------

DETERMINERS = ("the", "a")
ADJECTIVES = ("big", "red", "old", "shy")
NOUNS = ("cat", "dog", "bird", "fish", "frog")
TRANSITIVE = ("sees", "eats", "likes", "chases")
INTRANSITIVE = ("runs", "sleeps", "sings")


def noun_phrase(rng: random.Random) -> str:
    adjective = f"{rng.choice(ADJECTIVES)} " if rng.random() < 0.4 else ""
    return f"{rng.choice(DETERMINERS)} {adjective}{rng.choice(NOUNS)}"


def sentence(rng: random.Random) -> str:
    """S -> NP V_intransitive "." (p = 0.35) | NP V_transitive NP "."."""
    if rng.random() < 0.35:
        return f"{noun_phrase(rng)} {rng.choice(INTRANSITIVE)}."
    return f"{noun_phrase(rng)} {rng.choice(TRANSITIVE)} {noun_phrase(rng)}."


class CharTokenizer:
    """Characters to ids, with padding, beginning- and end-of-sequence tokens."""

    PAD, BOS, EOS = 0, 1, 2

    def __init__(self, texts: list[str]) -> None:
        self.chars = sorted(set("".join(texts)))
        self.ids = {c: i + 3 for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars) + 3

    def encode(self, text: str) -> list[int]:
        return [self.BOS, *(self.ids[c] for c in text), self.EOS]

    def batch(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Right-pad to the longest sequence; labels are the input ids, -100 on padding."""
        sequences = [self.encode(t) for t in texts]
        length = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), length), self.PAD)
        attention_mask = torch.zeros_like(input_ids)
        for i, s in enumerate(sequences):
            input_ids[i, : len(s)] = torch.tensor(s)
            attention_mask[i, : len(s)] = 1
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batches_of(tokenizer: CharTokenizer, texts: list[str], size: int) -> list[dict]:
    return [tokenizer.batch(texts[i : i + size]) for i in range(0, len(texts), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced smoke-test mode")
    parser.add_argument("--no-figure", action="store_true", help="do not write the figure")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    start = time.perf_counter()

    # training steps, analysed sequences, eigenvalues, SLQ probes x steps, Hutchinson probes,
    # random batches per batch size for the learning rate
    quick, full = (120, 32, 3, (3, 12), 6, 2), (400, 64, 5, (4, 30), 16, 4)
    steps, analysed, k, (probes, lanczos), hutchinson, draws = quick if args.quick else full
    batch, lr = 16, 3e-3

    rng = random.Random(0)
    train_texts = [sentence(rng) for _ in range(1024)]
    held_out_texts = [sentence(rng) for _ in range(256)]
    tokenizer = CharTokenizer(train_texts + held_out_texts)

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=48, n_embd=64, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.BOS, eos_token_id=tokenizer.EOS, pad_token_id=tokenizer.PAD,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    num_params = sum(p.numel() for p in model.parameters())  # lm_head is tied to wte

    # -- a plain PyTorch training loop ----------------------------------------------------------
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    order = random.Random(1)
    model.train()
    for _ in range(steps):
        loss = model(**tokenizer.batch(order.sample(train_texts, batch))).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained_s = time.perf_counter() - start
    print(
        f"GPT-2 ({config.n_layer} blocks, width {config.n_embd}, {num_params:,} parameters, "
        f"vocabulary {tokenizer.vocab_size}): {steps} AdamW steps at lr = {lr:g}, batch {batch}, "
        f"{trained_s:.1f} s"
    )

    # Curvature on the first training sequences, in the padded batches the model trains on.
    batches = batches_of(tokenizer, train_texts[:analysed], batch)
    held_out = batches_of(tokenizer, held_out_texts, 64)
    train_eval = ls.evaluate(model, batches)
    test_eval = ls.evaluate(model, held_out)

    H = ls.hessian(model, batches)  # the model's own loss, weighted by scored tokens
    top = ls.eigenvalues(H, k=k, seed=0)
    tokens, sequences = H.total_weight, H.num_samples  # known after the first product
    by_sequence = ls.hessian(model, batches, count=lambda b: b["input_ids"].shape[0])
    by_sequence @ top.vectors[:, 0]  # one product, to count the weights
    loss_by_sequence = ls.evaluate(model, batches, count=lambda b: b["input_ids"].shape[0])
    print(
        f"token weighting: {tokens:.0f} scored tokens in {sequences} sequences; "
        f"count=lambda b: b['input_ids'].shape[0] weighs {by_sequence.total_weight:.0f} "
        f"(loss {train_eval['value']:.4f} per token, {loss_by_sequence['value']:.4f} with "
        "sequence weights)"
    )
    print(
        f"top-{k} Hessian eigenvalues: "
        + ", ".join(f"{v:.4g}" for v in top.values.tolist())
        + f" ({int(top.converged.sum())} of {k} converged, {top.num_matvecs} HVPs)"
    )

    density = ls.spectral_density(H, num_probes=probes, num_steps=lanczos, seed=0)
    outliers = density.num_outliers
    gap = (
        f"{outliers} outlier{'s' * (outliers > 1)} above a bulk edge at {density.bulk_edge:.3g}"
        if outliers
        else "no clear gap between outliers and bulk"
    )
    print(
        f"spectral density (SLQ, {probes} probes x {lanczos} steps, {density.num_passes} "
        f"passes): {gap}; negative eigenvalues: {density.negative_fraction:.1%} of them, "
        f"{density.negative_mass_ratio:.1%} of sum |lambda|"
    )

    layers = ls.layerwise(model, batches, metrics=("trace",), num_probes=hutchinson, seed=0)
    print(
        f"\nper-layer Hessian traces ({layers.num_probes} Hutchinson probes in "
        f"{layers.num_passes} pass; transformer.wte is also the tied lm_head):"
    )
    print(layers.table())
    # modules= gives one row per named module over every parameter below it: a GPT-2
    # block's row covers its layer norms, attention and MLP (the trace of its Hessian block).
    blocks = ["transformer.wte", "transformer.wpe"]
    blocks += [f"transformer.h.{i}" for i in range(config.n_layer)] + ["transformer.ln_f"]
    per_module = ls.layerwise(
        model, batches, metrics=("trace",), num_probes=hutchinson, seed=0, modules=blocks
    )
    print("\nper block:")
    print(per_module.table())
    per_block = {row.name: row.trace for row in per_module.layers}
    total_trace = sum(per_block.values())
    print(
        f"{'total':<20}{H.shape[0]:>9}{total_trace:>10.4g}   (SLQ estimate: P x mean "
        f"eigenvalue = {H.shape[0] * density.moment(1):.4g})"
    )

    sizes = (4, batch, "full")
    rates = ls.max_learning_rate(
        model,
        batches,
        optimizer=optimizer,  # AdamW: its lr, betas, eps and second-moment state
        batch_sizes=sizes,
        num_batches=draws,
        seed=0,
    )
    print()
    print(rates.table())
    at_batch = float(rates.lr_max[list(rates.batch_sizes).index(batch)])

    largest = max(per_block, key=per_block.get)
    print("\nhugging face causal LM:")
    print(
        f"  model        GPT2LMHeadModel, {num_params:,} parameters; corpus: {len(train_texts)} "
        f"synthetic sentences, character tokens"
    )
    print(
        f"  loss         {train_eval['value']:.4f} per token on the {sequences} analysed training "
        f"sequences (next-token accuracy {train_eval['accuracy']:.1%}); held out "
        f"{test_eval['value']:.4f} ({test_eval['accuracy']:.1%})"
    )
    print(f"  weights      {tokens:.0f} scored tokens (not {sequences} sequences)")
    print(
        f"  curvature    lambda_1 = {float(top.values[0]):.4g}; Hessian trace {total_trace:.4g}, "
        f"the largest share in {largest} ({per_block[largest] / total_trace:.0%})"
    )
    print(
        f"  largest stable learning rate for AdamW at batch {batch}: {at_batch:.3g} "
        f"(trained with lr = {lr:g}: {lr / at_batch:.2f} of it)"
    )
    print(f"  total time   {time.perf_counter() - start:.1f} s")

    if not args.no_figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), layout="constrained")
        ls.plot_spectral_density(density, ax=axes[0])
        axes[0].set_title(f"Hessian spectral density, tiny GPT-2 (P = {H.shape[0]:,})")
        ls.plot_layerwise(layers, ax=axes[1], metric="trace")
        axes[1].set_title("Per-module Hessian trace (Hutchinson, token-weighted loss)")
        FIGURES.mkdir(exist_ok=True)
        path = FIGURES / "hf_causal_lm.png"
        fig.savefig(path, dpi=110)
        print(f"figure written to {path}")


if __name__ == "__main__":
    main()
