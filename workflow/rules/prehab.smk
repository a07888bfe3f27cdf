rule prehab:
    """Rank-regularised fine-tuning (Prehab); prehab~none/lam~0 is the lambda 0 control."""
    input:
        model=rules.pretrain.output.model,
        grams=rules.calibrate.output.grams,
    output:
        model=run_file(PREHABBED, MODEL_FILE),
        spectra=run_file(PREHABBED, layout.SPECTRA_FILE),
        metrics=run_file(PREHABBED, METRICS_FILE),
        snapshots=expand(
            run_file(SNAPSHOT, MODEL_FILE), snap=SNAPSHOTS, allow_missing=True
        ),
        snapshot_spectra=expand(
            run_file(SNAPSHOT, layout.SPECTRA_FILE), snap=SNAPSHOTS, allow_missing=True
        ),
        snapshot_metrics=expand(
            run_file(SNAPSHOT, METRICS_FILE), snap=SNAPSHOTS, allow_missing=True
        ),
    log:
        log_file(PREHABBED, "prehab"),
    benchmark:
        benchmark_file(PREHABBED, "prehab")
    conda:
        "../../envs/prehab.yaml"
    resources:
        runtime=training_resource("prehab", "runtime"),
        mem_mb=training_resource("prehab", "mem_mb"),
        gpu=gpu_request("prehab", "gpu"),
        gres=gpu_request("prehab", "gres"),
        nodes=training_resource("prehab", "nodes"),
        tasks=task_count("prehab"),
        tasks_per_gpu=0,  # the executor plugin would otherwise ask for --ntasks-per-gpu=tasks
    params:
        prehab=launcher("prehab"),
        compute=compute_flags,
        out=lambda wildcards, output: os.path.dirname(output.model),
        penalty=penalty_flags,
        schedule=section_flags(
            "prehab",
            [
                "lam_start",
                "lam_warmup_steps",
                "log_every",
                "penalty_every",
                "penalty_stagger",
                "estimator",
                "refresh_every",
                "damping",
            ],
        ),
        lam_scale=unless_recipe(
            lambda wildcards: section_flags("prehab", ["lam_scale"])
        ),
        steps=prehab_steps_flag,
        lr=unless_recipe(flag("--lr", "prehab_lr")),
        batch_size=unless_recipe(
            flag("--batch-size", "prehab_batch_size", fallback="batch_size")
        ),
        snapshots=f"--snapshots {' '.join(SNAPSHOTS)}" if SNAPSHOTS else "",
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "{params.prehab} prehab --model {input.model:q} --grams {input.grams:q}"
        " {params.penalty} --space {wildcards.space}"
        " {params.schedule} {params.lam_scale} {params.snapshots}"
        " --seed {wildcards.seed}"
        " {params.steps} {params.lr} {params.batch_size} {params.compute} {params.arch_opts}"
        " --out {params.out:q} > {log} 2>&1"


rule recalibrate:
    """The same calibration (source, size, seed) on a Prehab/control model or one of its
    snapshots (`tuned`), for its SVD-LLM surgery."""
    input:
        model=run_file(TUNED, MODEL_FILE),
    output:
        grams=run_file(RECALIBRATION, layout.GRAMS_FILE),
        metrics=run_file(RECALIBRATION, METRICS_FILE),
    log:
        log_file(RECALIBRATION, "recalibrate"),
    benchmark:
        benchmark_file(RECALIBRATION, "recalibrate")
    conda:
        "../../envs/prehab.yaml"
    params:
        prehab=PREHAB,
        out=lambda wildcards, output: os.path.dirname(output.grams),
        batch_size=flag("--batch-size", "calib_batch_size"),
        factor_dtype=flag("--factor-dtype", "calib_factor_dtype"),
        moment_dtype=flag("--moment-dtype", "calib_moment_dtype"),
        batching=flag("--batching", "calib_batching"),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "{params.prehab} calibrate --model {input.model:q} --source {wildcards.cal}"
        " --samples {wildcards.ncal} --seed {wildcards.seed} {params.batch_size} {params.factor_dtype}"
        " {params.moment_dtype} {params.batching}"
        " {params.arch_opts} --out {params.out:q} > {log} 2>&1"
