"""Shared, bounded hypothesis strategies, named as nouns.

The general ones live in ``gptref.conformance.strategies`` (the conformance suite uses them
too) and are re-exported here; this module adds the strategies only gptref's own tests need.
"""

from __future__ import annotations

import hypothesis.strategies as st

from gptref.conformance.strategies import (
    batch_lists,
    batch_sizes,
    epochs,
    logit_tensors,
    lr_schedules,
    prompts,
    seeds,
    target_batches,
    tiny_configs,
    token_batches,
    token_lists,
)

__all__ = [
    "batch_lists",
    "batch_sizes",
    "epochs",
    "hf_gpt2_states",
    "logit_tensors",
    "lr_schedules",
    "prompts",
    "seeds",
    "target_batches",
    "tiny_configs",
    "token_batches",
    "token_lists",
]

# ---------------------------------------------------------------- Hugging Face GPT-2 weights (issue 5)


@st.composite
def hf_gpt2_states(
    draw, *, min_emb: int = 1, max_layers: int = 2, max_vocab: int = 100, max_context: int = 16
):
    """(hf_state, n_heads): a Hugging Face GPT-2 state dict (names without ``transformer.``,
    float32) of random weights for a tiny size: 1-4 heads of width 1-8 (emb_dim >= min_emb,
    min_emb <= 8), 1..max_layers blocks.
    The head is drawn: no ``lm_head.weight`` (tied), one equal to ``wte``, or its own;
    ``h.{i}.attn.bias`` / ``masked_bias`` buffers are drawn too. LayerNorm weights are near 1
    and the others small, so the activations stay moderate."""
    import torch

    n_heads = draw(st.integers(1, 4))
    emb = n_heads * draw(st.integers(-(-min_emb // n_heads), 8))
    vocab = draw(st.integers(2, max_vocab))
    context = draw(st.integers(1, max_context))
    n_layers = draw(st.integers(1, max_layers))
    head = draw(st.sampled_from(["tied", "equal", "untied"]))
    buffers = draw(st.booleans())
    gen = torch.Generator().manual_seed(draw(seeds))

    def randn(*shape: int, std: float = 0.2, mean: float = 0.0) -> torch.Tensor:
        return mean + std * torch.randn(*shape, generator=gen)

    hf = {"wte.weight": randn(vocab, emb), "wpe.weight": randn(context, emb)}
    for i in range(n_layers):
        h = f"h.{i}"
        for ln in ("ln_1", "ln_2"):
            hf[f"{h}.{ln}.weight"] = randn(emb, std=0.1, mean=1.0)
            hf[f"{h}.{ln}.bias"] = randn(emb, std=0.1)
        for name, (d_in, d_out) in {
            "attn.c_attn": (emb, 3 * emb),
            "attn.c_proj": (emb, emb),
            "mlp.c_fc": (emb, 4 * emb),
            "mlp.c_proj": (4 * emb, emb),
        }.items():
            hf[f"{h}.{name}.weight"] = randn(d_in, d_out)  # Conv1D: (in, out)
            hf[f"{h}.{name}.bias"] = randn(d_out, std=0.1)
        if buffers:  # as older transformers wrote them: the causal mask and -1e4
            hf[f"{h}.attn.bias"] = torch.tril(torch.ones(context, context)).view(
                1, 1, context, context
            )
            hf[f"{h}.attn.masked_bias"] = torch.tensor(-1e4)
    hf["ln_f.weight"] = randn(emb, std=0.1, mean=1.0)
    hf["ln_f.bias"] = randn(emb, std=0.1)
    if head == "equal":
        hf["lm_head.weight"] = hf["wte.weight"].clone()
    elif head == "untied":
        hf["lm_head.weight"] = randn(vocab, emb)
    return hf, n_heads
