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
    resources:
        runtime=training_resource("pretrain", "runtime"),
        mem_mb=training_resource("pretrain", "mem_mb"),
        gpu=gpu_request("pretrain", "gpu"),
        gres=gpu_request("pretrain", "gres"),
        nodes=training_resource("pretrain", "nodes"),
        tasks=task_count("pretrain"),
        tasks_per_gpu=0,  # the executor plugin would otherwise ask for --ntasks-per-gpu=tasks
    params:
        prehab=launcher("pretrain"),
        compute=compute_flags,
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
        " {params.steps} {params.lr} {params.full_steps} {params.full_lr} {params.batch_size} {params.compute}"
        " {params.arch_opts}"
        " --out {params.out:q} > {log} 2>&1"
