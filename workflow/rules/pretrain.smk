rule pretrain:
    """The dense starting model of one architecture and seed."""
    output:
        model=run_file(DENSE, MODEL_FILE),
        metrics=run_file(DENSE, METRICS_FILE),
    log:
        log_file(DENSE, "pretrain"),
    benchmark:
        benchmark_file(DENSE, "pretrain")
    conda:
        "../../envs/prehab.yaml"
    params:
        prehab=PREHAB,
        out=lambda wildcards, output: os.path.dirname(output.model),
        steps=flag("--steps", "pretrain_steps"),
        lr=flag("--lr", "pretrain_lr"),
        full_steps=flag("--full-steps", "pretrain_full_steps"),
        full_lr=flag("--full-lr", "pretrain_full_lr"),
        batch_size=flag("--batch-size", "batch_size"),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "{params.prehab} pretrain --arch {wildcards.arch} --seed {wildcards.seed}"
        " {params.steps} {params.lr} {params.full_steps} {params.full_lr} {params.batch_size} {params.arch_opts}"
        " --out {params.out:q} > {log} 2>&1"
