rule prehab:
    """Rank-regularised fine-tuning (Prehab); prehab~none/lam~0 is the lambda 0 control."""
    input:
        model=rules.pretrain.output.model,
        grams=rules.calibrate.output.grams,
    output:
        model=run_file(PREHABBED, "model.pt"),
        spectra=run_file(PREHABBED, "spectra.pt"),
        metrics=run_file(PREHABBED, "metrics.json"),
    log:
        log_file(PREHABBED, "prehab"),
    benchmark:
        benchmark_file(PREHABBED, "prehab")
    conda:
        "../../envs/prehab.yaml"
    params:
        out=lambda wildcards, output: os.path.dirname(output.model),
        surrogate=surrogate,
        warmup=lookup(dpath="prehab/warmup_steps", within=config),
        lam_start=lookup(dpath="prehab/lam_start", within=config),
        log_every=lookup(dpath="prehab/log_every", within=config),
        penalty_every=lookup(dpath="prehab/penalty_every", within=config, default=1),
        steps=flag("--steps", "prehab_steps"),
        lr=flag("--lr", "prehab_lr"),
        batch_size=flag("--batch-size", "batch_size"),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "prehab prehab --model {input.model:q} --grams {input.grams:q}"
        " --surrogate {params.surrogate} --lam {wildcards.lam} --space {wildcards.space}"
        " --lam-start {params.lam_start} --lam-warmup-steps {params.warmup}"
        " --log-every {params.log_every} --penalty-every {params.penalty_every}"
        " --seed {wildcards.seed}"
        " {params.steps} {params.lr} {params.batch_size} {params.arch_opts}"
        " --out {params.out:q} > {log} 2>&1"


rule recalibrate:
    """The same calibration (source, size, seed) on a Prehab/control model, for its SVD-LLM."""
    input:
        model=rules.prehab.output.model,
    output:
        grams=run_file(f"{PREHABBED}/recal", "grams.pt"),
        metrics=run_file(f"{PREHABBED}/recal", "metrics.json"),
    log:
        log_file(f"{PREHABBED}/recal", "recalibrate"),
    benchmark:
        benchmark_file(f"{PREHABBED}/recal", "recalibrate")
    conda:
        "../../envs/prehab.yaml"
    params:
        out=lambda wildcards, output: os.path.dirname(output.grams),
        batch_size=flag("--batch-size", "calib_batch_size"),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "prehab calibrate --model {input.model:q} --source {wildcards.cal}"
        " --samples {wildcards.ncal} --seed {wildcards.seed} {params.batch_size}"
        " {params.arch_opts} --out {params.out:q} > {log} 2>&1"
