"""gptref: the reference GPT pretraining data path and training step of
"Build a Large Language Model (From Scratch)" (chapters 2 and 5, appendix D)."""

from gptref.checkpoint import (
    capture_rng,
    load_checkpoint,
    load_config,
    load_state_dict,
    restore_rng,
    save_checkpoint,
    save_state_dict,
)
from gptref.data import (
    BatchOrderSampler,
    GPTDataset,
    TokenFile,
    batch_order,
    batches,
    chunk,
    collate,
    create_dataloader,
    num_chunks,
    split,
    tokenize,
)
from gptref.fast import compile_model, make_optimizer, set_tf32, unwrap
from gptref.generate import generate, generate_text_simple
from gptref.loss import calc_loss_batch, calc_loss_loader, perplexity
from gptref.model import (
    GPT_CONFIG_124M,
    GPT_CONFIG_355M,
    GPT_CONFIG_774M,
    GPT_CONFIG_1558M,
    GPT_CONFIG_SMALL,
    GPT_CONFIG_TINY,
    GPTConfig,
    GPTModel,
)
from gptref.prepare import PreparedCorpus
from gptref.schedule import appendix_d_lr, lr_at
from gptref.tokenizer import gpt2_tokenizer, text_to_token_ids, token_ids_to_text
from gptref.train import History, NonFiniteError, StepResult, evaluate, train, train_step
from gptref.weights import (
    config_from_hf,
    export_hf,
    gptref_to_hf,
    hf_to_gptref,
    import_hf,
    load_hf_safetensors,
)

__version__ = "0.1.0"

# the semantics this package declares to its conformance suite (gptref.conformance), where it
# departs from the book on purpose: calc_loss_loader's default is the book's mean of batch
# means and it takes weighting="batch" or "token"; lr_at ends at exactly min_lr (the book's
# appendix-D formula is appendix_d_lr)
LOADER_LOSS_WEIGHTING = "batch"
LOADER_LOSS_WEIGHTINGS = ("batch", "token")
LR_SCHEDULE = "exact"

__all__ = [
    "GPT_CONFIG_124M",
    "GPT_CONFIG_355M",
    "GPT_CONFIG_774M",
    "GPT_CONFIG_1558M",
    "GPT_CONFIG_SMALL",
    "GPT_CONFIG_TINY",
    "BatchOrderSampler",
    "GPTConfig",
    "GPTDataset",
    "GPTModel",
    "History",
    "NonFiniteError",
    "PreparedCorpus",
    "StepResult",
    "TokenFile",
    "appendix_d_lr",
    "batch_order",
    "batches",
    "calc_loss_batch",
    "calc_loss_loader",
    "capture_rng",
    "chunk",
    "collate",
    "compile_model",
    "config_from_hf",
    "create_dataloader",
    "evaluate",
    "export_hf",
    "generate",
    "generate_text_simple",
    "gpt2_tokenizer",
    "gptref_to_hf",
    "hf_to_gptref",
    "import_hf",
    "load_checkpoint",
    "load_config",
    "load_hf_safetensors",
    "load_state_dict",
    "lr_at",
    "make_optimizer",
    "num_chunks",
    "perplexity",
    "restore_rng",
    "save_checkpoint",
    "save_state_dict",
    "set_tf32",
    "split",
    "text_to_token_ids",
    "token_ids_to_text",
    "tokenize",
    "train",
    "train_step",
    "unwrap",
]
