rule prehab:
    """Rank-regularised fine-tuning (Prehab); prehab~none/lam~0 is the lambda 0 control."""
    input:
        model=rules.pretrain.output.model,
        grams=rules.calibrate.output.grams,
    output:
        model=run_file(PREHABBED, MODEL_FILE),
        spectra=run_file(PREHABBED, layout.SPECTRA_FILE),
        metrics=run_file(PREHABBED, METRICS_FILE),
    log:
        log_file(PREHABBED, "prehab"),
    benchmark:
        benchmark_file(PREHABBED, "prehab")
    conda:
        "../../envs/prehab.yaml"
    params:
        prehab=PREHAB,
        out=lambda wildcards, output: os.path.dirname(output.model),
        surrogate=surrogate,
        schedule=section_flags(
            "prehab",
            [
                "lam_start",
                "lam_warmup_steps",
                "log_every",
                "penalty_every",
                "penalty_stagger",
                "estimator",
            ],
        ),
        steps=flag("--steps", "prehab_steps"),
        lr=flag("--lr", "prehab_lr"),
        batch_size=flag("--batch-size", "batch_size"),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "{params.prehab} prehab --model {input.model:q} --grams {input.grams:q}"
        " --surrogate {params.surrogate} --lam {wildcards.lam} --space {wildcards.space}"
        " {params.schedule}"
        " --seed {wildcards.seed}"
        " {params.steps} {params.lr} {params.batch_size} {params.arch_opts}"
        " --out {params.out:q} > {log} 2>&1"


rule recalibrate:
    """The same calibration (source, size, seed) on a Prehab/control model, for its SVD-LLM."""
    input:
        model=rules.prehab.output.model,
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
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "{params.prehab} calibrate --model {input.model:q} --source {wildcards.cal}"
        " --samples {wildcards.ncal} --seed {wildcards.seed} {params.batch_size}"
        " {params.arch_opts} --out {params.out:q} > {log} 2>&1"
