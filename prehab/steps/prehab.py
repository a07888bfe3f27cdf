"""`prehab prehab`: rank-regularised fine-tuning of the target layers (the method's core)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prehab.errors import UsageError
from prehab.layout import SNAPSHOT_PART, SPECTRA_FILE, fmt
from prehab.method.names import (
    ANCHORED, DEFAULT_REFRESH, ESTIMATORS, LAM_SCALES, NEEDS_RATIO, SCALE_FREE, SPACES, SURROGATES, check_tail_ratio,
)
from prehab.method.ratio import RATIO_RULE, valid_ratio
from prehab.method.recipes import RECIPES, Recipe
from prehab.method.schedule import LambdaSchedule
from prehab.steps.options import COUNT, NON_NEGATIVE, POSITIVE, TrainingOptions, option, step_default

if TYPE_CHECKING:
    import torch

HELP = "fine-tune with task loss + lambda * rank surrogate of the whitened weights (lambda 0 = control)"


@dataclass(kw_only=True)
class Options(TrainingOptions):
    model: Path = option("input model: a step's output folder or its model.pt", type=Path)
    grams: Path = option("`prehab calibrate` output (folder or grams.pt): the whitening factors L", type=Path)
    recipe: str | None = option("the authors' recipe (surrogate, lambda schedule, space, lr, batch size and steps "
                                "as their code ran them); other flags may not contradict it, except --steps, "
                                "which scales it (recorded beside the recipe's own count), and --lam 0, its "
                                "control", None,
                                choices=tuple(RECIPES))
    surrogate: str = option(f"rank surrogate. Scale-free ({', '.join(sorted(SCALE_FREE))}): unchanged when the "
                            "matrix is scaled, so growing its largest singular values lowers them too and the "
                            "penalty can be met without shrinking what truncation loses; "
                            f"{' and '.join(s for s in SURROGATES if s not in SCALE_FREE)} keep the scale "
                            f"({', '.join(sorted(ANCHORED))}: the absolute tail energy divided by each "
                            "matrix's starting ||W L||_F^2, fixed at the start; docs/method.md, section 3)",
                            "nuclear", choices=SURROGATES)
    tail_ratio: float | None = option(f"the compression ratio whose truncation --surrogate "
                                      f"{' or '.join(sorted(NEEDS_RATIO))} prices (needed by those only)", None,
                                      type=float, check=(RATIO_RULE, valid_ratio))
    estimator: str = option("exact: autograd through an fp64 eigen-decomposition per matrix per step (the "
                            "reference); fast: warm-started eigenbasis per matrix, matrix products (docs/"
                            "performance.md: not faster on the embedded testbeds); lagged: each matrix's penalty "
                            "linearised in its weights and refreshed exactly every --refresh-every steps, in "
                            "rotation, a drift guard shortening the lag where the gradient goes stale",
                            "exact", choices=ESTIMATORS)
    refresh_every: int | None = option("with --estimator lagged: the longest lag k, in steps, between two exact "
                                       "refreshes of a matrix's penalty (1/k of the exact cost per step; default "
                                       f"{DEFAULT_REFRESH})", None, type=int, check=COUNT)
    lam: float = option("penalty weight lambda; 0 = the control run", 1.0, type=float, check=NON_NEGATIVE)
    lam_scale: str = option("none: lambda as given; grad: lambda times rho, the ratio of the task gradient's norm "
                            "to the unweighted penalty's at step 1 (on its batch, over the trained tensors), so "
                            "lambda 1 means equal gradient norms at the start, whatever the surrogate. rho is "
                            "measured and recorded either way (metrics.json grad_norm_ratio, lam_effective)",
                            "none", choices=LAM_SCALES)
    lam_start: float = option("first lambda of the geometric warm-up (needs --lam-warmup-steps)", 0.0, type=float,
                              check=NON_NEGATIVE)
    lam_warmup_steps: int = option("steps of geometric warm-up from --lam-start to --lam (0: constant)", 0,
                                   type=int, check=NON_NEGATIVE)
    space: str = option("whitened: train a delta D in whitened coordinates (authors'); weight: train W, penalty "
                        "on W L; raw: train W, penalty on W (unwhitened ablation)", "whitened", choices=SPACES)
    damping: float = option("damping f of the whitening Prehab trains and penalises through: each factor re-made "
                            "from L L^T + f * mean(diag) * I (GPTQ's form; 0.01 is GPTQ's default), which bounds "
                            "how hard a whitened-delta step acts in the directions the calibration barely saw "
                            "(docs/method.md, 4.2); the --grams files are not changed, so surgery with them stays "
                            "undamped. 0 = the factors as calibrated", 0.0, type=float, check=NON_NEGATIVE)
    steps: int | None = option("Prehab steps", None, type=int, check=NON_NEGATIVE)
    lr: float | None = option("Adam learning rate", None, type=float, check=POSITIVE)
    batch_size: int | None = option("batch size", None, type=int, check=COUNT)
    penalty_every: int = option("apply k * lambda * R on every k-th step only: 1/k of the spectral cost, but under "
                                "Adam a weaker push than lambda on every step (the k-times gradient raises Adam's "
                                "second-moment estimate); studies should use 1 = every step", 1, type=int,
                                check=COUNT)
    penalty_stagger: bool = option("with --penalty-every k: penalise a rotating 1/k of the matrices on every step "
                                   "instead of all of them on every k-th step", False, action="store_true")
    log_every: int = option("curve logging interval in steps", 10, type=int, check=COUNT)
    snapshots: list[float] = option("also save the model after these fractions of --steps (each in (0, 1)), as "
                                    "OUT/snap~F: one long run gives the whole budget curve; a snapshot equals a "
                                    "separate run of that many steps (same seed) on CPU", [], type=float, many=True,
                                    check=("a fraction in (0, 1)", lambda v: 0 < v < 1))
    seed: int = option("seed of data order", 0, type=int)
    out: Path = option("output folder (written atomically: all or nothing)", type=Path)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.recipe is not None:
            self._apply_recipe(RECIPES[self.recipe])
        self.schedule = LambdaSchedule(self.lam, self.lam_start, self.lam_warmup_steps)  # checks the warm-up
        check_tail_ratio(self.surrogate, self.tail_ratio)
        if self.refresh_every is not None and self.estimator != "lagged":
            raise UsageError(f"--refresh-every {self.refresh_every} needs --estimator lagged (got {self.estimator})")
        if self.estimator == "lagged" and self.refresh_every is None:
            self.refresh_every = DEFAULT_REFRESH
        if len(set(self.snapshots)) != len(self.snapshots):
            raise UsageError(f"--snapshots {' '.join(f'{f:g}' for f in self.snapshots)}: a fraction is listed twice")

    def _apply_recipe(self, recipe: Recipe) -> None:
        """Take the recipe's values; a flag set to something else (not its default) is an error,
        except --lam 0: the recipe's own control (everything else the same)."""
        control = self.lam == 0
        for name in ("surrogate", "lam", "lam_start", "lam_warmup_steps", "lam_scale", "space", "lr", "batch_size"):
            if control and name in ("lam", "lam_start", "lam_warmup_steps"):
                continue
            default = next(f.default for f in dataclasses.fields(self) if f.name == name)
            mine, theirs = getattr(self, name), getattr(recipe, name)
            if mine not in (default, theirs):
                raise UsageError(f"--{name.replace('_', '-')} {mine} contradicts --recipe {self.recipe} "
                                 f"({name} {theirs}); leave it out")
            setattr(self, name, theirs)
        if self.steps is None:
            self.steps = recipe.steps


def snapshot_steps(fractions: list[float], steps: int) -> dict[int, float]:
    """{step: fraction}: each fraction's step count, round(fraction * steps), at least 1.

    Raises:
        UsageError: two fractions fall on the same step (too few --steps to tell them apart).
    """
    chosen: dict[int, float] = {}
    for fraction in sorted(fractions):
        step = max(1, round(fraction * steps))
        if step in chosen:
            raise UsageError(f"--snapshots {chosen[step]:g} and {fraction:g} both fall on step {step} of {steps}")
        chosen[step] = fraction
    return chosen


def run(opts: Options) -> dict:
    # imported here: `prehab --help` and `prehab STEP --help` must not load torch
    import torch

    from prehab import checkpoint
    from prehab.compute import enable_recompute
    from prehab.device import resolve_device
    from prehab.distributed import World
    from prehab.layers import find_targets, get_module
    from prehab.method.calibrate import load_whitening
    from prehab.method.mechanism import whitened_spectra
    from prehab.method.prehab import PrehabSettings, fold_state, run_prehab
    from prehab.method.surrogates import Surrogate, entropy_rank_of
    from prehab.outputs import StepRecord, atomic_dir
    from prehab.steps.common import checkpoint_options, seed_everything

    penalty = Surrogate(opts.surrogate, opts.tail_ratio)
    ckpt = checkpoint.load(opts.model)
    spec = ckpt.spec
    options = checkpoint_options(ckpt, opts)
    whitening = load_whitening(opts.grams).damped(opts.damping)
    steps = step_default(opts.steps, spec, "prehab_steps")
    lr = step_default(opts.lr, spec, "prehab_lr")
    batch_size = step_default(opts.batch_size, spec, "batch_size")
    params = {"model": str(opts.model), "grams": str(opts.grams), "arch": spec.name, "surrogate": opts.surrogate,
              **({"tail_ratio": opts.tail_ratio} if opts.tail_ratio is not None else {}),
              **({"estimator": opts.estimator} if opts.estimator != "exact" else {}),
              **({"refresh_every": opts.refresh_every} if opts.estimator == "lagged" else {}),
              **({"penalty_stagger": True} if opts.penalty_stagger else {}),
              **({"lam_scale": opts.lam_scale} if opts.lam_scale != "none" else {}),
              **({"damping": opts.damping} if opts.damping else {}),
              **({"recipe": opts.recipe, "recipe_steps": RECIPES[opts.recipe].steps} if opts.recipe else {}),
              "lam": opts.lam, "lam_start": opts.lam_start, "lam_warmup_steps": opts.lam_warmup_steps,
              "space": opts.space, "penalty_every": opts.penalty_every, "steps": steps, "lr": lr,
              "batch_size": batch_size, "seed": opts.seed, **opts.compute().params()}
    ckpt.model.to(resolve_device(opts.device))
    seed_everything(opts.seed)
    targets = find_targets(ckpt.model, spec.targets)
    if opts.recompute:
        enable_recompute(ckpt.model, targets)
    whitening.check_fits(ckpt.model, targets, opts.grams)
    started = time.perf_counter()
    data = spec.load(options, "train", None, opts.seed)
    before = whitened_spectra(ckpt.model, targets, whitening)
    shapes = {name: tuple(get_module(ckpt.model, name).weight.shape) for name in targets}
    at = snapshot_steps(opts.snapshots, steps)

    # An anchored surrogate's whitened values are divided by the starting whitened energy (unridged).
    anchors = {name: float((s.double() ** 2).sum()) for name, s in before.items()} if penalty.anchored else {}

    def R(spectra: dict[str, torch.Tensor]) -> float:
        return _mean_over(lambda name, s: float(penalty.of_eigenvalues(s.double() ** 2, shapes[name],
                                                                       anchors.get(name))), spectra)

    def save(model, folder: Path, result, run_params: dict) -> dict:
        """One model's outputs: checkpoint, spectra before/after, metrics.json with its curve."""
        curve = result.curve
        after = whitened_spectra(model, targets, whitening)
        record = StepRecord("prehab", run_params, started)
        # Both measured on the WHITENED weights (in every space), from the stored spectra.
        record.metrics.update(
            whitened_surrogate_before=R(before),
            whitened_surrogate_after=R(after),
            entropy_rank_before=_mean_over(lambda name, s: entropy_rank_of(s), before),
            entropy_rank_after=_mean_over(lambda name, s: entropy_rank_of(s), after),
            final_task_loss=curve[-1]["task_loss"] if curve else None,
            **result.metrics(),  # step 1's gradient-norm ratio and the lambda used
        )
        if result.anchors:
            record.extra["surrogate_anchors"] = result.anchors
        record.extra["curve"] = curve
        history = ckpt.history + [{"step": "prehab", **run_params}]
        checkpoint.save(checkpoint.Checkpoint(model, spec.name, options, ckpt.arch_config, {}, history), folder)
        torch.save({"before": before, "after": after}, folder / SPECTRA_FILE)
        return record.write(folder)

    world = World.from_env()
    written = contextlib.nullcontext() if not world.main else atomic_dir(opts.out)  # rank 0 alone writes
    with written as out:
        def on_snapshot(step: int, model, result) -> None:
            fraction = at[step]
            folder = out / SNAPSHOT_PART.format(snap=fmt(fraction))
            folder.mkdir()
            result.curve = [row for row in result.curve if row["step"] <= step]
            save(model, folder, result, {**params, "steps": step, "snapshot": fraction})

        settings = PrehabSettings(
            surrogate=penalty, schedule=opts.schedule, space=opts.space, steps=steps, lr=lr, batch_size=batch_size,
            seed=opts.seed, log_every=opts.log_every, penalty_every=opts.penalty_every,
            stagger=opts.penalty_stagger, estimator=opts.estimator,
            refresh_every=opts.refresh_every or DEFAULT_REFRESH, lam_scale=opts.lam_scale, compute=opts.compute())
        if not world.sharded:
            result = run_prehab(ckpt.model, spec.task, data, whitening, targets, settings,
                                snapshots=(set(at), on_snapshot))
            return save(ckpt.model, out, result, params)
        result = run_prehab(ckpt.model, spec.task, data, whitening, targets, settings, world=world)
        state = world.full_state_dict(ckpt.model)
        if world.main:  # the plain model, its targets folded, is what the other steps read
            model = checkpoint.load(opts.model).model
            model.load_state_dict(fold_state(state, targets, whitening) if opts.space == "whitened" else state)
            return save(model, out, result, params)
        return None


def _mean_over(fn, spectra: dict[str, torch.Tensor]) -> float:
    """Mean over layers of a function of (layer name, singular values)."""
    return float(sum(float(fn(name, s.double())) for name, s in spectra.items()) / len(spectra))
