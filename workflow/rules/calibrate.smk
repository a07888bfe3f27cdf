rule calibrate:
    """Second moments (and Cholesky factors) of the target layers' inputs on the dense model."""
    input:
        model=rules.pretrain.output.model,
    output:
        grams=run_file(CALIBRATION, "grams.pt"),
        metrics=run_file(CALIBRATION, "metrics.json"),
    log:
        log_file(CALIBRATION, "calibrate"),
    benchmark:
        benchmark_file(CALIBRATION, "calibrate")
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
