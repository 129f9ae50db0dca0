"""gptref: the reference GPT pretraining data path and training step of
"Build a Large Language Model (From Scratch)" (chapters 2 and 5, appendix D)."""

from gptref.data import (
    BatchOrderSampler,
    GPTDataset,
    batch_order,
    batches,
    chunk,
    collate,
    create_dataloader,
    num_chunks,
    split,
    tokenize,
)
from gptref.tokenizer import gpt2_tokenizer, text_to_token_ids, token_ids_to_text

__version__ = "0.1.0"

__all__ = [
    "BatchOrderSampler",
    "GPTDataset",
    "batch_order",
    "batches",
    "chunk",
    "collate",
    "create_dataloader",
    "gpt2_tokenizer",
    "num_chunks",
    "split",
    "text_to_token_ids",
    "token_ids_to_text",
    "tokenize",
]
