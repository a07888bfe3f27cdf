rule rehab:
    """LoRA recovery of a compressed model (joint or sequential), merged afterwards."""
    input:
        model=run_file("arch~{arch}/seed~{seed}/{compressed}", "model.pt"),
    output:
        model=run_file(REHABBED, "model.pt"),
        metrics=run_file(REHABBED, "metrics.json"),
    log:
        log_file(REHABBED, "rehab"),
    benchmark:
        benchmark_file(REHABBED, "rehab")
    conda:
        "../../envs/prehab.yaml"
    params:
        out=lambda wildcards, output: os.path.dirname(output.model),
        rank=lookup(dpath="lora/rank", within=config),
        alpha=lookup(dpath="lora/alpha", within=config),
        dropout=lookup(dpath="lora/dropout", within=config),
        steps=flag("--steps", "rehab_steps"),
        lr=flag("--lr", "rehab_lr"),
        batch_size=flag("--batch-size", "batch_size"),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "prehab rehab --model {input.model:q} --schedule {wildcards.lora}"
        " --rank {params.rank} --alpha {params.alpha} --dropout {params.dropout}"
        " --seed {wildcards.seed} {params.steps} {params.lr} {params.batch_size}"
        " {params.arch_opts} --out {params.out:q} > {log} 2>&1"
