rule evaluate:
    """Task metric (accuracy or perplexity) and size of any model of the grid."""
    input:
        model=run_file(MODEL, MODEL_FILE),
    output:
        metrics=run_file(MODEL, EVAL_METRICS),
    log:
        log_file(f"{MODEL}/{layout.EVAL_DIR}", "evaluate"),
    benchmark:
        benchmark_file(f"{MODEL}/{layout.EVAL_DIR}", "evaluate")
    conda:
        "../../envs/prehab.yaml"
    params:
        prehab=PREHAB,
        out=lambda wildcards, output: os.path.dirname(output.metrics),
        batch_size=flag("--batch-size", "eval_batch_size"),
        precision=flag("--precision", "eval_precision"),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "{params.prehab} evaluate --model {input.model:q} {params.batch_size} {params.precision} {params.arch_opts}"
        " --out {params.out:q} > {log} 2>&1"
