"""LLaMA-family architectures (task `lm`): a random fixture, the embedded SmolLM2 testbed, and
the paper's LLaMA-7B on WikiText-2 / C4.

| name        | weights                                 | data                                      |
|-------------|-----------------------------------------|-------------------------------------------|
| llama-tiny  | random, hidden 32, 2 layers             | Wikipedia (embedded), SmolLM2 tokens       |
| llama-small | SmolLM2-135M-Instruct (de-quantised)    | Wikipedia; shift = Jane Austen             |
| llama-7b    | huggyllama/llama-7b (hub/local folder)  | WikiText-2 or C4 (hub or local folder)     |
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # transformers costs seconds to import: only the functions that build pay
    from transformers import LlamaForCausalLM

from prehab.data import hf_text, text
from prehab.data.splits import check_split
from prehab.errors import UsageError
from prehab.registry import ArchSpec, register_arch
from prehab.weights import smollm2

# Every decoder Linear: Q, K, V, O and the SwiGLU gate/up/down. lm_head and embeddings stay dense.
LLAMA_TARGETS = (
    r"model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))",
)
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EMBEDDED_LM_SOURCES = {  # the embedded LM testbeds' calibration sources
    "train": "Wikipedia training windows",
    "shift": "Jane Austen's novels (janeaustenr): another text domain",
}


# ----------------------------------------------------------------------------- shared
def arch_config_of(model: LlamaForCausalLM) -> dict[str, Any]:
    """JSON-able description from which `llama_from_config` rebuilds the module tree."""
    return {"config": model.config.to_dict(), "torch_dtype": str(model.dtype).removeprefix("torch.")}


def torch_dtype(name: str) -> torch.dtype:
    if name not in TORCH_DTYPES:
        raise UsageError(f"torch_dtype={name!r} is unknown; allowed: {', '.join(TORCH_DTYPES)}")
    return TORCH_DTYPES[name]


def llama_from_config(arch_config: dict[str, Any]) -> LlamaForCausalLM:
    """Same module names, shapes and dtype as the saved model; weights are freshly initialised."""
    from transformers import LlamaConfig, LlamaForCausalLM
    model = LlamaForCausalLM(LlamaConfig.from_dict(arch_config["config"]))
    return model.to(torch_dtype(arch_config.get("torch_dtype", "float32")))


# ----------------------------------------------------------------------------- embedded data
SEPARATOR = "\n\n"  # between articles / novels, as WikiText separates its rows


# split -> (cache name, texts): Wikipedia articles split by article, Jane Austen for `shift`.
EMBEDDED_SOURCES = {
    "train": ("wikipedia_train", lambda: text.wikipedia_split("train")),
    "test": ("wikipedia_test", lambda: text.wikipedia_split("test")),
    "shift": ("jane_austen", lambda: list(text.jane_austen().values())),
}


@lru_cache(maxsize=3)
def _stream(split: str) -> torch.Tensor:
    """(L,) SmolLM2 token stream of one embedded source, cached under resources_dir()/tokens."""
    name, texts = EMBEDDED_SOURCES[split]
    return text.cached_tensor(
        f"smollm2_{name}", lambda: text.token_stream(smollm2.load_tokenizer(), texts(), SEPARATOR)
    )


# SmolLM2 tokens of each embedded stream (tests/test_data_sizes.py checks them against _stream).
EMBEDDED_TOKENS = {"train": 646_058, "test": 73_790, "shift": 927_382}


def embedded_lm_rows(options: dict[str, Any]) -> dict[str, int]:
    """ArchSpec.split_rows of the embedded LM testbeds: whole windows of options["seq_len"]."""
    return {split: tokens // options["seq_len"] for split, tokens in EMBEDDED_TOKENS.items()}


def load_embedded_lm(options: dict[str, Any], split: str, n: int | None = None, seed: int = 0) -> dict:
    """Non-overlapping windows of options["seq_len"] SmolLM2 tokens.

    `train`/`test`: the gensim Wikipedia articles, every 10th article in test (fixed, seed-free);
    `shift`: Jane Austen's six novels, a second domain for calibration.
    """
    check_split(split, tuple(EMBEDDED_SOURCES), "the embedded LLaMA archs")
    ids = text.windows(_stream(split), options["seq_len"])  # (N, T)
    source = "Jane Austen (shift)" if split == "shift" else f"Wikipedia {split}"
    return text.subset({"input_ids": ids}, split, n, seed, f"{source} windows of {options['seq_len']} tokens")


# ----------------------------------------------------------------------------- llama-tiny
def build_llama_tiny(options: dict[str, Any]) -> tuple[LlamaForCausalLM, dict]:
    """A random 2-layer LLaMA (GQA 4/2 heads) over the SmolLM2 vocabulary: a fast fixture."""
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(
        vocab_size=len(smollm2.load_tokenizer()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=max(2048, options["seq_len"]),
    )
    model = LlamaForCausalLM(config)
    return model, arch_config_of(model)


register_arch(
    ArchSpec(
        name="llama-tiny",
        family="llama",
        task="lm",
        build_pretrained=build_llama_tiny,
        from_config=llama_from_config,
        load_split=load_embedded_lm,
        targets=LLAMA_TARGETS,
        options={"seq_len": 32, "n_test": 128, "n_val": 32},
        defaults={
            "pretrain_steps": 30,
            "pretrain_lr": 1e-3,
            "batch_size": 8,
            "eval_batch_size": 64,
            "prehab_steps": 20,
            "prehab_lr": 1e-3,
            "rehab_steps": 10,
            "rehab_lr": 1e-3,
            "calib_samples": 32,
        },
        calib_sources=EMBEDDED_LM_SOURCES,
        split_rows=embedded_lm_rows,
        note="random-weight test fixture (hidden 32, 2 layers); numbers mean nothing",
    )
)


# ----------------------------------------------------------------------------- llama-small
def build_llama_small(options: dict[str, Any]) -> tuple[LlamaForCausalLM, dict]:
    """SmolLM2-135M-Instruct from the de-quantised cache (converted once from the GGUF file)."""
    model = smollm2.load_model()
    return model, arch_config_of(model)


register_arch(
    ArchSpec(
        name="llama-small",
        family="llama",
        task="lm",
        build_pretrained=build_llama_small,
        from_config=llama_from_config,
        load_split=load_embedded_lm,
        targets=LLAMA_TARGETS,
        options={"seq_len": 64, "n_test": 64, "n_val": 64},
        defaults={
            "pretrain_steps": 0,  # used as loaded
            "pretrain_lr": 1e-5,
            "batch_size": 8,
            "eval_batch_size": 16,
            "prehab_steps": 20,
            "prehab_lr": 2e-5,
            "rehab_steps": 10,
            "rehab_lr": 1e-4,
            "calib_samples": 128,
        },
        calib_sources=EMBEDDED_LM_SOURCES,
        split_rows=embedded_lm_rows,
        note="SmolLM2-135M-Instruct de-quantised from a Q4_1 GGUF (weights went through 4-bit quantisation)",
    )
)


# ----------------------------------------------------------------------------- llama-7b
@lru_cache(maxsize=4)
def _paper_windows(model: str, dataset: str, data_dir: str, split: str, seq_len: int) -> torch.Tensor:
    return hf_text.lm_windows(dataset, data_dir, split, hf_text.load_tokenizer(model), seq_len)


def build_llama_7b(options: dict[str, Any]) -> tuple[LlamaForCausalLM, dict]:
    """`options["model"]` (hub name or local folder) in `options["torch_dtype"]`."""
    from transformers import LlamaForCausalLM
    dtype = torch_dtype(options["torch_dtype"])
    model = LlamaForCausalLM.from_pretrained(options["model"], dtype=dtype)
    return model, arch_config_of(model)


def load_paper_lm(options: dict[str, Any], split: str, n: int | None = None, seed: int = 0) -> dict:
    """Windows of options["seq_len"] tokens of WikiText-2 (test rows joined by "\\n\\n", as
    SVD-LLM) or C4 (first 1,100 validation documents, 256 windows, as GPTQ / SVD-LLM)."""
    check_split(split, ("train", "test"), "llama-7b")
    hf_text.lm_source(options["dataset"])
    ids = _paper_windows(options["model"], options["dataset"], options["data_dir"], split, options["seq_len"])
    what = f"{options['dataset']} {split} windows of {options['seq_len']} tokens"
    return text.subset({"input_ids": ids}, split, n, seed, what)


def extra_lm_tests(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """ArchSpec.extra_tests of llama-7b: `extra_test` (e.g. c4, read from `extra_test_dir`, else the
    hub) scored beside the dataset's own test split, as SVD-LLM reports WikiText-2 and C4 of one
    model calibrated on WikiText-2."""
    name = options["extra_test"]
    if not name:
        return {}
    hf_text.lm_source(name)  # a known dataset, else a UsageError naming the allowed ones
    return {name: {**options, "dataset": name, "data_dir": options["extra_test_dir"]}}


register_arch(
    ArchSpec(
        name="llama-7b",
        family="llama",
        task="lm",
        build_pretrained=build_llama_7b,
        from_config=llama_from_config,
        load_split=load_paper_lm,
        targets=LLAMA_TARGETS,
        options={
            "model": "huggyllama/llama-7b",
            "dataset": "wikitext2",
            "data_dir": "",
            "seq_len": 2048,
            "torch_dtype": "float32",
            "extra_test": "",  # a second test set, e.g. c4 (its test: the GPTQ / SVD-LLM validation windows)
            "extra_test_dir": "",  # its local copy ("": the hub)
        },
        defaults={
            "pretrain_steps": 0,  # used as loaded
            "pretrain_lr": 1e-5,
            "batch_size": 4,
            "eval_batch_size": 1,
            "prehab_steps": 500,
            "prehab_lr": 1e-5,
            "rehab_steps": 500,
            "rehab_lr": 1e-4,
            "calib_samples": 256,  # SVD-LLM: 256 windows of 2,048 training tokens
        },
        calib_sources={"train": "windows of the dataset's training split"},
        note="paper scale: LLaMA-7B (needs the hub or a local copy and a large machine)",
        extra_tests=extra_lm_tests,
    )
)
