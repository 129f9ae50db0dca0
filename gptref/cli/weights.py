"""``gptref weights import-hf | export-hf``: Hugging Face GPT-2 weights in and out, offline."""

from __future__ import annotations

import dataclasses

from gptref._setting import required, setting
from gptref.cli.common import checkpoint_flag

NAME = "weights"
HELP = "import/export Hugging Face GPT-2 weights"
DESCRIPTION = (
    "Convert between a Hugging Face GPT-2 model.safetensors and a gptref checkpoint, offline."
)


@dataclasses.dataclass(frozen=True)
class ImportArgs:
    safetensors: str = required(
        "a Hugging Face GPT-2 model.safetensors, or the directory save_pretrained wrote (its "
        "config.json gives the heads)", metavar="PATH",
    )  # fmt: skip
    out: str = required("the gptref checkpoint directory to write (new or empty)", metavar="DIR")
    overwrite: bool = setting(False, "replace an earlier import in --out DIR")
    n_heads: int | None = setting(
        None, "attention heads (default: GPT-2's for the file's width: 768 -> 12, 1024 -> 16, "
        "1280 -> 20, 1600 -> 25); the file does not record them", metavar="N",
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ExportArgs:
    checkpoint: str = checkpoint_flag()
    out: str = required("the model.safetensors to write (a new file)", metavar="PATH")
    overwrite: bool = setting(False, "replace an earlier export at --out PATH")


def import_hf(args: ImportArgs) -> int:
    from gptref.weights.hf import hf_files, import_hf

    file, hf_config = hf_files(args.safetensors)
    if args.n_heads is None and hf_config is not None:
        print(f"read {file.parent / 'config.json'}: n_head {hf_config['n_head']}, n_embd "
              f"{hf_config['n_embd']}, n_layer {hf_config['n_layer']}")  # fmt: skip
    out = import_hf(args.safetensors, args.out, n_heads=args.n_heads, overwrite=args.overwrite)
    print(f"wrote gptref checkpoint {out}")
    return 0


def export_hf(args: ExportArgs) -> int:
    from gptref.weights.hf import export_hf

    out = export_hf(args.checkpoint, args.out, overwrite=args.overwrite)
    print(f"wrote Hugging Face safetensors {out}")
    return 0


# ACTION -> (help, its Args, its function)
ACTIONS = {
    "import-hf": ("HF model.safetensors -> gptref checkpoint directory", ImportArgs, import_hf),
    "export-hf": ("gptref checkpoint (or run directory) -> HF model.safetensors", ExportArgs,
                  export_hf),
}  # fmt: skip
