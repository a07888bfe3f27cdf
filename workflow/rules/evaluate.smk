rule evaluate:
    """Task metric (accuracy or perplexity) and size of any model of the grid."""
    input:
        model=run_file(MODEL, "model.pt"),
    output:
        metrics=run_file(f"{MODEL}/eval", "metrics.json"),
    log:
        log_file(f"{MODEL}/eval", "evaluate"),
    benchmark:
        benchmark_file(f"{MODEL}/eval", "evaluate")
    conda:
        "../../envs/prehab.yaml"
    params:
        out=lambda wildcards, output: os.path.dirname(output.metrics),
        batch_size=flag("--batch-size", "eval_batch_size"),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "prehab evaluate --model {input.model:q} {params.batch_size} {params.arch_opts}"
        " --out {params.out:q} > {log} 2>&1"
