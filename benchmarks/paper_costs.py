"""What config/paper.yaml costs on GPUs: the memory each rule needs and the GPU-hours of each
study, estimated from FLOP and byte counts of the jobs Snakemake plans, with the relative speed
of the per-layer decompositions measured on this machine. Estimates until measured on a GPU.

How:
- Jobs: `snakemake --dry-run --printshellcmds` of the config, once with every study and once
  per study alone (shared jobs, such as pretraining, count in every study that needs them); each
  job's steps, batch size and ratios are read from its command line, else from the
  architecture's registered defaults or its recipe (prehab/method/recipes.py).
- Models: built on the meta device (no weights, no download) from their standard configs; the
  target layers are the package's own (`find_targets`), so the counts are the package's work.
- FLOPs per job: a forward pass is 2 x weights per token plus attention's 4 x tokens x width per
  block; a training step 3 forward passes (LoRA: 2); the exact penalty per target matrix and step
  (m x n, k = min(m, n), float64) W L (2 m n^2), the Gram (2 m n k), its eigen-decomposition
  (9 k^3) and the gradient back through both (2 m n k + 2 m n^2); calibration one forward over
  the calibration tokens plus a Gram per distinct input (2 tokens n^2: the whole product, an
  upper bound on the lower half the package takes; in float32, `prehab calibrate`'s default)
  and its Cholesky (n^3 / 3); compression per target W L (SVD-LLM only) and a float64 SVD
  (6 m n^2 + 20 k^3), then one evaluation per ratio.
- Memory per GPU of a job on N processes (its `--processes`; FSDP2 shards every parameter per
  block), at its `--precision`, `--micro-batches` and `--recompute`: float32 master weights
  (4 bytes per weight) and, for what trains, float32 gradients and Adam's two moments (12 bytes),
  all divided by N; with N > 1 two blocks' gathered weights (bf16 or float32); activations of
  one micro-batch of batch / (N x micro-batches) rows, 17 x tokens x width values per block
  (Korthikanti et al.'s 34 bytes at 16 bits; without the attention scores, which torch's fused
  attention does not keep) at 2 bytes (bf16) or 4, for every block, or with --recompute each
  block's input for every block plus one block's activations; a language model's float32 logits
  and their gradient. Prehab trains the target matrices only (the whitened delta or W): in the
  weight space each rank holds the factors of the targets it prices (1/N of them); in the
  whitened space every rank holds every factor (the forward pass reads them) and the A0 of its
  own targets, and the materialised W0 + D L^-1 of every target is kept for the backward pass
  (of one block with --recompute); plus the float64 work of the largest target's penalty. Rehab
  holds the frozen model (across processes twice: whole and as shards) and its adapters;
  calibration the model, the kept activations and one block's float64 moments; compression the
  model plus the largest target's float64 SVD.
- Time: FLOPs divided by assumed sustained rates of one GPU (flags; the defaults are
  guesses for an A100: float32 without TF32, which torch leaves off for matmuls, and bf16 at
  about half its tensor-core peak): the training steps at the job's precision (--recompute adds
  one forward pass per step), float64 matmuls, and float64 decompositions (eigh and Cholesky;
  SVD), each scaled by its speed relative to a float64 matmul as measured here on the CPU with
  the same FLOP counts (at most 1). N processes split a step's work and the penalty's targets, so
  a job's GPU-hours do not depend on N (communication left out).

    .venv/bin/python benchmarks/paper_costs.py [--configfile config/paper.yaml] [--gpu-gb 80]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections import defaultdict
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from prehab.compute import Compute
from planned import REPO, Job, planned_jobs  # benchmarks/planned.py (scripts run from benchmarks/ as sys.path[0])

TRAINING_RULES = ("pretrain", "prehab", "rehab")
SLOW_DECOMPOSITIONS = 10  # the sensitivity line: decompositions this many times slower


@dataclass
class Shape:
    """What the cost model needs of one paper-scale model."""

    weights: int  # parameters
    blocks: int
    width: int
    tokens: int  # per sample
    targets: list[tuple[int, int]]  # (out, in) of every target layer
    inputs: list[int]  # width of every distinct target input (one second moment each)
    eval_samples: int  # test set
    block_inputs: list[int]  # distinct inputs of one block
    vocab: int = 0  # a language model's output width (its logits per token); 0: a classifier


def _meta_model(arch: str):
    """The paper model on the meta device: shapes only."""
    with torch.device("meta"):
        if arch == "vit-b16":
            import timm
            return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=1000)
        if _family(arch) == "bert-base":
            from transformers import BertConfig, BertForSequenceClassification
            return BertForSequenceClassification(BertConfig(num_labels=_glue(arch).num_labels))
        if arch == "llama-7b":
            from transformers import LlamaConfig, LlamaForCausalLM
            return LlamaForCausalLM(LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                                num_attention_heads=32, num_key_value_heads=32, vocab_size=32000))
    raise SystemExit(f"no cost model for architecture {arch!r}; allowed: vit-b16, bert-base, llama-7b")


# Test-set sizes: ImageNet-1k validation; the GLUE task's validation split (MNLI: matched);
# WikiText-2 test in 2,048-token LLaMA windows (about 341k tokens, the tail dropped); an extra
# test set (`--arch-opt extra_test=c4`) adds C4's 256 validation windows (GPTQ / SVD-LLM).
EVAL_SAMPLES = {"vit-b16": 50_000, "llama-7b": 166}
EXTRA_TEST_SAMPLES = {"c4": 256}
GLUE_VALIDATION = {"sst2": 872, "mnli": 9815, "qnli": 5463, "qqp": 40430, "cola": 1043, "mrpc": 408, "rte": 277}
# (blocks, width, tokens per sample)
GEOMETRY = {"vit-b16": (12, 768, 197), "bert-base": (12, 768, 128), "llama-7b": (32, 4096, 2048)}
VOCAB = {"llama-7b": 32000}
# Targets that read the previous target's input (one second moment between them, as calibration
# finds by tensor identity): BERT's and LLaMA's k/v after q, LLaMA's up after gate.
FOLLOWERS = {"vit-b16": (), "bert-base": ("self.key", "self.value"), "llama-7b": ("k_proj", "v_proj", "up_proj")}


def _family(arch: str) -> str:
    """The cost model's key: every GLUE task's BERT-base (`bert-base-TASK`) has one geometry."""
    from prehab.registry import get_arch

    return "bert-base" if "glue_task" in get_arch(arch).options else arch


def _glue(arch: str):
    from prehab.data.hf_text import glue_task
    from prehab.registry import get_arch

    return glue_task(get_arch(arch).options["glue_task"])


def shape_of(arch: str) -> Shape:
    from prehab.layers import find_targets, get_module
    from prehab.registry import get_arch

    model = _meta_model(arch)
    names = find_targets(model, get_arch(arch).targets)
    layers = [get_module(model, n) for n in names]
    targets = [(m.out_features, m.in_features) for m in layers]
    family = _family(arch)
    inputs = [m.in_features for name, m in zip(names, layers) if not name.endswith(FOLLOWERS[family])]
    blocks, width, tokens = GEOMETRY[family]
    eval_samples = GLUE_VALIDATION[get_arch(arch).options["glue_task"]] if family == "bert-base" else EVAL_SAMPLES[arch]
    return Shape(sum(p.numel() for p in model.parameters()), blocks, width, tokens, targets, inputs,
                 eval_samples, inputs[: len(inputs) // blocks], VOCAB.get(family, 0))


@dataclass
class Rates:
    """Sustained FLOP/s of one GPU."""

    fp32: float
    bf16: float
    fp64: float
    eigh: float  # float64 eigen-decompositions and Cholesky factors
    svd: float  # float64 SVDs


def forward_flops(s: Shape, samples: float) -> float:
    return samples * s.tokens * (2.0 * s.weights + 4.0 * s.blocks * s.tokens * s.width)


def penalty_flops(s: Shape) -> float:
    """(matmul, decomposition) float64 FLOPs of the exact penalty on every target, one step."""
    mm = sum(4 * m * n * n + 4 * m * n * min(m, n) for m, n in s.targets)
    return float(mm), float(sum(9 * min(m, n) ** 3 for m, n in s.targets))


def steps_of(job: Job, arch_defaults: dict, recipes: dict) -> int:
    if job.flag("--steps"):
        return int(job.flag("--steps")[0])
    recipe = job.flag("--recipe")
    if recipe:
        return recipes[recipe[0]].steps
    key = {"pretrain": "pretrain_steps", "prehab": "prehab_steps", "rehab": "rehab_steps"}[job.rule]
    return int(arch_defaults[key])


def batch_of(job: Job, arch_defaults: dict, recipes: dict) -> int:
    if job.flag("--batch-size"):
        return int(job.flag("--batch-size")[0])
    recipe = job.flag("--recipe")
    return recipes[recipe[0]].batch_size if recipe else int(arch_defaults["batch_size"])


@dataclass(frozen=True)
class Setup:
    """How a training job computes (prehab.compute.Compute: precision, micro-batches, recompute)
    and over how many processes: its flags, or the ones a study varies here."""

    processes: int = 1
    compute: Compute = Compute()

    @classmethod
    def of(cls, job: Job) -> "Setup":
        return cls(job.processes, Compute((job.flag("--precision") or ["float32"])[0],
                                          int((job.flag("--micro-batches") or [1])[0]), "--recompute" in job.command))


def training_memory(rule: str, s: Shape, batch: int, setup: Setup, space: str | None = None) -> float:
    """Bytes on one GPU of a training step (module docstring)."""
    n, compute = setup.processes, setup.compute
    value = 2.0 if compute.precision == "bf16" else 4.0
    rows = math.ceil(batch / (n * compute.micro_batches))
    per_block = 17.0 * rows * s.tokens * s.width * value
    kept = rows * s.tokens * s.width * value * s.blocks + per_block if compute.recompute else per_block * s.blocks
    logits = 8.0 * rows * s.tokens * s.vocab if s.vocab else 0.0
    target_weights = float(sum(m * k for m, k in s.targets))
    gathered = 2.0 * value * s.weights / s.blocks if n > 1 else 0.0
    if rule == "pretrain":
        state = 16.0 * s.weights / n
    elif rule == "rehab":
        state = 4.0 * s.weights * (1 + 1 / n if n > 1 else 1)
    else:  # prehab: the target matrices train (W, or the whitened delta beside the frozen W0)
        delta = target_weights if space == "whitened" else 0.0
        state = (4.0 * (s.weights + delta) + 12.0 * target_weights) / n
        factors = 4.0 * sum(w * w for w in s.inputs)
        if space == "whitened":
            materialised = 4.0 * target_weights / (s.blocks if compute.recompute else 1)
            state += factors + 4.0 * target_weights / n + materialised  # every factor, own A0s
        else:
            state += factors / n
        m, k = max(s.targets, key=lambda t: t[0] * t[1])
        state += 8.0 * (2 * m * k + 4 * min(m, k) ** 2)  # the largest target's float64 penalty
    return state + gathered + kept + logits


def job_cost(job: Job, s: Shape, defaults: dict, recipes: dict, rates: Rates,
             setup: Setup | None = None) -> tuple[float, float]:
    """(GPU seconds, bytes per GPU) of one job; `setup` overrides the job's own compute flags."""
    samples = int((job.flag("--samples") or [256])[0])
    calib = samples * s.tokens
    models = len(job.flag("--model")) if job.rule == "rehab" else 1  # one rehab job recovers every ratio
    evals = models * max(1, len(job.flag("--ratio")))
    if job.rule != "evaluate" and "--evaluate" not in job.command:
        evals = 0
    extra = [EXTRA_TEST_SAMPLES[o.split("=", 1)[1]] for o in job.flag("--arch-opt") if o.startswith("extra_test=")]
    eval_bf16 = "bf16" in job.flag("--precision" if job.rule == "evaluate" else "--eval-precision")
    seconds = evals * forward_flops(s, s.eval_samples + sum(extra)) / (rates.bf16 if eval_bf16 else rates.fp32)
    widest = max(s.targets, key=lambda t: t[0] * t[1])
    svd_work = 8.0 * (2 * widest[0] * widest[1] + 2 * min(widest) ** 2)
    word = 2.0 if eval_bf16 else 4.0  # bytes per weight and activation as evaluated, one block's activations
    memory = word * s.weights + word * 17 * int(defaults["eval_batch_size"]) * s.tokens * s.width
    steps = steps_of(job, defaults, recipes) if job.rule in TRAINING_RULES else 0
    if steps:  # (pretraining 0 steps takes the checkpoint as it is)
        setup = setup or Setup.of(job)
        batch = batch_of(job, defaults, recipes)
        passes = (2.0 if job.rule == "rehab" else 3.0) + (1.0 if setup.compute.recompute else 0.0)
        rate = rates.bf16 if setup.compute.precision == "bf16" else rates.fp32
        seconds += models * steps * passes * forward_flops(s, batch) / rate
        space = (job.flag("--space") or [None])[0]
        memory = training_memory(job.rule, s, batch, setup, space)
        if job.rule == "prehab" and job.flag("--lam") != ["0"]:
            mm, dec = penalty_flops(s)
            seconds += steps * (mm / rates.fp64 + dec / rates.eigh)
    elif job.rule in ("calibrate", "recalibrate"):
        seconds += forward_flops(s, samples) / rates.fp32
        seconds += sum(2.0 * calib * n * n for n in s.inputs) / rates.fp32  # --moment-dtype float32
        seconds += sum(n ** 3 / 3 for n in s.inputs) / rates.eigh
        memory = 4.0 * s.weights + 4.0 * calib * s.width + 8.0 * sum(n * n for n in s.block_inputs)
    elif job.rule.startswith("compress"):
        whiten = 0 if job.rule == "compress_svd" else sum(2 * m * n * n for m, n in s.targets)
        seconds += whiten / rates.fp64 + sum(6 * m * n * min(m, n) for m, n in s.targets) / rates.fp64
        seconds += sum(20 * min(m, n) ** 3 for m, n in s.targets) / rates.svd
        memory = 4.0 * s.weights + svd_work
    return seconds, memory


def measured_rates() -> dict[str, float]:
    """FLOP/s measured here, one thread: float32 and float64 matmuls, float64 eigh and SVD."""
    torch.set_num_threads(1)
    out = {}
    for name, n, flops, fn in (
        ("fp32 matmul", 1024, 2 * 1024 ** 3, lambda a: a.float() @ a.float()),
        ("fp64 matmul", 1024, 2 * 1024 ** 3, lambda a: a @ a),
        ("fp64 eigh", 768, 9 * 768 ** 3, lambda a: torch.linalg.eigh(a @ a.T)),
        ("fp64 SVD", 768, 26 * 768 ** 3, lambda a: torch.linalg.svd(a, full_matrices=False)),  # 6 m n^2 + 20 n^3
    ):
        a = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        fn(a)
        best = float("inf")
        for _ in range(3):  # the fastest of three: the machine is shared and noisy
            start = time.perf_counter()
            fn(a)
            best = min(best, time.perf_counter() - start)
        out[name] = flops / best
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", type=Path, default=REPO / "config" / "paper.yaml")
    parser.add_argument("--fp32-tflops", type=float, default=12.0, help="sustained float32 matmul TFLOP/s of one GPU")
    parser.add_argument("--bf16-tflops", type=float, default=150.0, help="sustained bf16 matmul TFLOP/s of one GPU")
    parser.add_argument("--fp64-tflops", type=float, default=12.0, help="sustained float64 matmul TFLOP/s of one GPU")
    parser.add_argument("--gpu-gb", type=float, default=80.0, help="memory of one GPU, GB")
    args = parser.parse_args()

    import prehab.archs  # noqa: F401  (registers the architectures)
    from prehab.method.recipes import RECIPES
    from prehab.registry import get_arch

    here = measured_rates()
    print("measured here (one CPU thread), GFLOP/s: " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in here.items()))
    fp64 = args.fp64_tflops * 1e12
    share = {k: min(1.0, here[f"fp64 {k}"] / here["fp64 matmul"]) for k in ("eigh", "SVD")}
    rates = Rates(args.fp32_tflops * 1e12, args.bf16_tflops * 1e12, fp64, fp64 * share["eigh"], fp64 * share["SVD"])
    print(f"assumed GPU: float32 {args.fp32_tflops:g} TFLOP/s, bf16 {args.bf16_tflops:g} TFLOP/s, float64 {args.fp64_tflops:g} TFLOP/s, eigh "
          f"{rates.eigh / 1e12:.2f} and SVD {rates.svd / 1e12:.2f} TFLOP/s (float64 x the ratio measured here to "
          f"a float64 matmul, at most 1: {share['eigh']:.2f}, {share['SVD']:.2f}), {args.gpu_gb:g} GB")

    default = REPO / "config" / "config.yaml"
    config = yaml.safe_load(args.configfile.read_text())
    enabled = [name for name, study in config["studies"].items() if study.get("enabled", True)]
    shapes = {}

    # GPU solvers may reach a far smaller share of their matmul speed than LAPACK does here
    slow = Rates(rates.fp32, rates.bf16, rates.fp64, rates.eigh / SLOW_DECOMPOSITIONS, rates.svd / SLOW_DECOMPOSITIONS)

    def costs(jobs: list[Job], at: Rates = rates) -> dict[tuple[str, str], list[tuple[float, float]]]:
        out = defaultdict(list)
        for job in jobs:
            if job.arch not in shapes:
                shapes[job.arch] = shape_of(job.arch)
            spec = get_arch(job.arch)
            out[(job.arch, job.rule)].append(job_cost(job, shapes[job.arch], spec.defaults, RECIPES, at))
        return out

    def gpu_hours(table) -> float:
        return sum(sec for rows in table.values() for sec, _ in rows) / 3600

    planned = planned_jobs([default, args.configfile])
    union = costs(planned)
    print(f"\n{args.configfile.relative_to(REPO)}: every study; per rule and architecture, the largest job")
    w = max(len(arch) for arch, _ in union)
    print(f"  {'arch':{w}s} {'rule':17s} {'jobs':>4s} {'GPUs':>4s} {'GB/GPU':>7s} {'fits':>5s} {'GPU-h/job':>9s} "
          f"{'GPU-h':>7s}")
    total = 0.0
    gpus = {(job.arch, job.rule): job.processes for job in planned}
    for (arch, rule), rows in sorted(union.items()):
        hours = [sec / 3600 for sec, _ in rows]
        gb = max(mem for _, mem in rows) / 1e9
        total += sum(hours)
        print(f"  {arch:{w}s} {rule:17s} {len(rows):4d} {gpus[(arch, rule)]:4d} {gb:7.1f} "
              f"{'yes' if gb <= args.gpu_gb else 'NO':>5s} {max(hours):9.2f} {sum(hours):7.1f}")
    print(f"  total: {total:.0f} GPU-hours ({gpu_hours(costs(planned, slow)):.0f} if the decompositions ran "
          f"{SLOW_DECOMPOSITIONS}x slower)")
    for arch, s in sorted(shapes.items()):  # job order of the dry run varies between runs
        print(f"  {arch}: {s.weights / 1e6:.0f}M weights, {len(s.targets)} targets, {len(s.inputs)} distinct inputs")

    prehab_by_setup(planned, shapes, rates, args.gpu_gb)

    print("\nper study alone (the jobs it needs, shared ones included): GPU-hours by architecture")
    for name in enabled:
        alone = {"studies": {other: {"enabled": False, "methods": ["dense"]} for other in enabled if other != name}}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(alone, f)
        try:
            jobs = planned_jobs([default, args.configfile, Path(f.name)])
        finally:
            Path(f.name).unlink()
        by_arch = defaultdict(float)
        for (arch, _), rows in costs(jobs).items():
            by_arch[arch] += sum(sec for sec, _ in rows) / 3600
        print(f"  {name:14s} " + ", ".join(f"{a} {h:.0f}" for a, h in sorted(by_arch.items()))
              + f"; total {sum(by_arch.values()):.0f} ({gpu_hours(costs(jobs, slow)):.0f} with slow decompositions)")


def prehab_by_setup(planned: list[Job], shapes: dict[str, Shape], rates: Rates, gpu_gb: float) -> None:
    """LLaMA-7B's Prehab jobs (the config's batch, steps, micro-batches and recompute; each space it
    runs) at N = 1, 2, 4, 8 processes, float32 and bf16: GB per GPU and GPU-hours per job."""
    from prehab.method.recipes import RECIPES
    from prehab.registry import get_arch

    defaults = get_arch("llama-7b").defaults
    jobs = {}
    for job in planned:  # per space, its dearest penalised job (the most steps; the dry run's order varies)
        if job.rule == "prehab" and job.arch == "llama-7b" and job.flag("--lam") != ["0"]:
            space = (job.flag("--space") or ["whitened"])[0]
            if space not in jobs or steps_of(job, defaults, RECIPES) > steps_of(jobs[space], defaults, RECIPES):
                jobs[space] = job
    if not jobs:
        return
    print("\nllama-7b Prehab per job at N processes (FSDP over N GPUs), float32 and bf16, at the config's batch, "
          "steps, micro-batches and recompute: GB per GPU (fits) | GPU-hours")
    for space, job in sorted(jobs.items()):
        own = Setup.of(job)
        batch, steps = batch_of(job, defaults, RECIPES), steps_of(job, defaults, RECIPES)
        print(f"  {space} space, batch {batch} x {shapes['llama-7b'].tokens} tokens, {steps} steps, "
              f"{own.compute.micro_batches} micro-batches, recompute {'on' if own.compute.recompute else 'off'} "
              f"(the config asks for N = {own.processes}, {own.compute.precision}):")
        for precision in ("float32", "bf16"):
            cells = []
            for n in (1, 2, 4, 8):
                setup = Setup(n, dataclasses.replace(own.compute, precision=precision))
                sec, mem = job_cost(job, shapes["llama-7b"], defaults, RECIPES, rates, setup)
                cells.append(f"N={n}: {mem / 1e9:6.1f} GB ({'yes' if mem / 1e9 <= gpu_gb else 'NO'}) | "
                             f"{sec / 3600:5.1f} h")
            print(f"    {precision:7s} " + "; ".join(cells))


if __name__ == "__main__":
    main()
