"""A context for functions of models with attention: the math kernel and no fused fast path."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["math_attention"]


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Use the math attention kernel and no fused transformer fast path (the only ones with AD).

    Fused CPU/CUDA scaled-dot-product-attention kernels (used by ``nn.MultiheadAttention``
    and ``nn.TransformerEncoderLayer``) implement neither forward-mode AD nor
    double-backward, and the eval-mode "fast path" of those modules
    (``aten::_transformer_encoder_layer_fwd``) has no forward-mode AD: every curvature
    product through them fails without this (verified on torch 2.13). The global fast-path
    flag is restored on exit.

    Yields
    ------
    None
        Inside the context.
    """
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - torch < 2.3
        sdpa_kernel = None
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        if sdpa_kernel is None:  # pragma: no cover
            yield
        else:
            with sdpa_kernel(SDPBackend.MATH):
                yield
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(fastpath)
