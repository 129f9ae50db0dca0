"""``gptref generate``: continue a prompt with a checkpoint's model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gptref._check import FieldError, check_int, check_number
from gptref._setting import required, setting
from gptref.cli.common import Device, checkpoint_flag, device_flag

NAME = "generate"
HELP = "continue a prompt with a checkpoint's model"
DESCRIPTION = (
    "Continue --prompt: greedy by default; --temperature > 0 samples (with --top-k), seeded "
    "by --seed. Stops early at <|endoftext|>."
)


@dataclasses.dataclass(frozen=True)
class Args:
    checkpoint: str = checkpoint_flag()
    prompt: str = required("the text to continue")
    max_new_tokens: int = setting(50, "tokens to add at most", metavar="N")
    temperature: float = setting(
        0.0, "0: greedy; > 0: sample from softmax(logits / X)", metavar="X"
    )
    top_k: int | None = setting(None, "sample only among the N most likely tokens", metavar="N")
    seed: int = setting(123, "seed of the sampling generator", metavar="N")
    device: Device = device_flag()

    def __post_init__(self) -> None:
        if not self.prompt:
            raise FieldError("generate", "prompt", "must not be empty; generation continues it")
        check_int("generate", "max_new_tokens", self.max_new_tokens, low=0)
        check_number("generate", "temperature", self.temperature, low=0, hint="; 0 is greedy")
        if self.top_k is not None:
            check_int("generate", "top_k", self.top_k, low=1)
        if not 0 <= check_int("generate", "seed", self.seed) < 2**63:
            raise FieldError("generate", "seed", f"must be in [0, 2**63), got {self.seed}")


def main(args: Args) -> int:
    print(generate_run(
        args.checkpoint, args.prompt, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_k=args.top_k, seed=args.seed, device=args.device,
    ))  # fmt: skip
    return 0


def generate_run(
    checkpoint: str | Path,
    prompt: str,
    *,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 123,
    device: str = "auto",
) -> str:
    """-> prompt followed by up to ``max_new_tokens`` tokens from the checkpoint's model."""
    import torch

    from gptref.generation import generate
    from gptref.run.loaders import resolve_device
    from gptref.run.resume import check_finite_weights
    from gptref.run.rundir import load_model
    from gptref.tokenizer import ENDOFTEXT_ID, text_to_token_ids, token_ids_to_text

    dev = resolve_device(device)
    model, _ = load_model(checkpoint, dev)
    check_finite_weights(model, f"in {checkpoint}")
    if top_k is not None and top_k > model.cfg.vocab_size:
        raise ValueError(
            f"--top-k {top_k} exceeds the model's vocabulary ({model.cfg.vocab_size} tokens); "
            "omit it to sample among all tokens"
        )
    generator = torch.Generator(device=dev).manual_seed(seed)
    ids = generate(
        model, text_to_token_ids(prompt).to(dev), max_new_tokens, model.cfg.context_length,
        temperature=temperature, top_k=top_k, eos_id=ENDOFTEXT_ID, generator=generator,
    )  # fmt: skip
    return token_ids_to_text(ids.cpu())
