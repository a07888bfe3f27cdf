"""What the bring-your-own-model architectures (`hf-causal-lm`, `hf-seq-cls`, `timm-image-cls`)
share: the generic target rule, their required options and the Hugging Face config round trip.

They register nothing themselves; each kind's module does (prehab/archs/hf_causal_lm.py, ...).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch.nn as nn

from prehab.archs.llama import torch_dtype
from prehab.errors import UsageError

if TYPE_CHECKING:  # transformers costs seconds to import: only the functions that build pay
    from transformers import PretrainedConfig, PreTrainedModel

# Heads and poolers stay dense wherever they sit: the output layer of a causal LM (`lm_head`,
# often the embedding itself), of a classifier (`classifier`, `score`, timm's `head`), and the
# pooler / pre-classifier between the last block and the head.
HEAD_NAMES = ("lm_head", "classifier", "score", "head", "pooler", "pre_classifier")
# Every nn.Linear inside a numbered block (`model.layers.3.mlp.up_proj`, `bert.encoder.layer.0
# .attention.self.query`, timm's `blocks.11.attn.qkv`): the transformer blocks are the entries of
# a ModuleList, so their layers, and no embedding or head, carry a `.<index>.` in their names.
BLOCK_LINEARS = rf"(?!(.*\.)?({'|'.join(HEAD_NAMES)})(\.|$))(.+\.)?\d+\..+"
GENERIC_TARGETS = (BLOCK_LINEARS,)


def required(options: dict[str, Any], key: str, arch: str, what: str) -> str:
    """`options[key]`, refused when empty: these architectures have no model or data of their own."""
    value = options[key]
    if not value:
        raise UsageError(f"{arch} needs --arch-opt {key}=... ({what})")
    return value


def check_targets(model: nn.Module, arch: str) -> None:
    """Refuse a model the generic rule finds nothing in, saying what the rule is (find_targets'
    own message names only the pattern)."""
    compiled = re.compile(BLOCK_LINEARS)
    if not any(isinstance(m, nn.Linear) and compiled.fullmatch(name) for name, m in model.named_modules()):
        raise UsageError(
            f"{arch}: {type(model).__name__} has no nn.Linear inside a numbered block (the layers Prehab "
            f"targets: every nn.Linear under `<list>.<index>.`, except {', '.join(HEAD_NAMES)}); models "
            "built from other layer types (GPT-2's Conv1D, convolutions) need an architecture module of their own"
        )


def rows_asked(split: str, n: int | None) -> int | None:
    """Option `n_test` 0 means the whole test split (evaluation passes it as `n`)."""
    return None if split == "test" and n == 0 else n


# ----------------------------------------------------------------------------- Hugging Face
def hf_arch_config(model: PreTrainedModel) -> dict[str, Any]:
    """JSON-able description from which `hf_from_config` rebuilds the module tree."""
    return {"config": model.config.to_dict(), "torch_dtype": str(model.dtype).removeprefix("torch.")}


def hf_config(arch_config: dict[str, Any]) -> PretrainedConfig:
    """The saved config as its own class (LlamaConfig, BertConfig, ...), chosen by `model_type`."""
    from transformers import CONFIG_MAPPING

    config = arch_config["config"]
    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise UsageError(f"model_type {model_type!r} is not a transformers model type (custom code is not supported)")
    return CONFIG_MAPPING[model_type].from_dict(config)


def hf_from_config(auto_class: str):
    """`ArchSpec.from_config` for one transformers Auto class (`AutoModelForCausalLM`, ...): same
    module names, shapes, dtype and weight tying as the saved model; weights freshly initialised."""

    def from_config(arch_config: dict[str, Any]) -> PreTrainedModel:
        import transformers

        model = getattr(transformers, auto_class).from_config(hf_config(arch_config))
        return model.to(torch_dtype(arch_config.get("torch_dtype", "float32")))

    return from_config


def hf_pretrained(auto_class: str, options: dict[str, Any], arch: str, **kwargs) -> PreTrainedModel:
    """`options["model"]` (hub name or local folder) through a transformers Auto class."""
    import transformers

    name = required(options, "model", arch, "a hub name or a local folder saved with save_pretrained")
    model = getattr(transformers, auto_class).from_pretrained(name, dtype=torch_dtype(options["torch_dtype"]), **kwargs)
    check_targets(model, arch)
    return model


def tokenizer_name(options: dict[str, Any], arch: str) -> str:
    """Option `tokenizer`, or the model's own when it is empty."""
    return options["tokenizer"] or required(options, "model", arch, "a hub name or a local folder")


def load_tokenizer(name: str):
    """The tokenizer of a hub name or folder, padding on the right (the text tasks trim batches by
    it, prehab.tasks) with a pad token (the eos token when it has none)."""
    from prehab.data.hf_text import load_tokenizer as cached

    tokenizer = cached(name)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
