rule calibrate:
    """Second moments (and Cholesky factors) of the target layers' inputs on the dense model."""
    input:
        model=rules.pretrain.output.model,
    output:
        grams=run_file(CALIBRATION, layout.GRAMS_FILE),
        metrics=run_file(CALIBRATION, METRICS_FILE),
    log:
        log_file(CALIBRATION, "calibrate"),
    benchmark:
        benchmark_file(CALIBRATION, "calibrate")
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
