rule rehab:
    """LoRA recovery (joint or sequential, merged afterwards) of one model compressed at every
    LoRA ratio, each evaluated."""
    input:
        models=per_ratio(COMPRESSED, "model.pt", LORA_RATIOS),
    output:
        models=big_models(per_ratio(COMPRESSED, "lora~{lora}/model.pt", LORA_RATIOS)),
        metrics=per_ratio(COMPRESSED, "lora~{lora}/metrics.json", LORA_RATIOS),
        evals=per_ratio(COMPRESSED, "lora~{lora}/eval/metrics.json", LORA_RATIOS),
    log:
        log_file(COMPRESSED, "rehab_{lora}"),
    benchmark:
        benchmark_file(COMPRESSED, "rehab_{lora}")
    priority: 1  # run as soon as its models exist: they are temp() and big (llama-small)
    conda:
        "../../envs/prehab.yaml"
    params:
        outs=out_dirs,
        rank=lookup(dpath="lora/rank", within=config),
        alpha=lookup(dpath="lora/alpha", within=config),
        dropout=lookup(dpath="lora/dropout", within=config),
        steps=flag("--steps", "rehab_steps"),
        lr=flag("--lr", "rehab_lr"),
        batch_size=flag("--batch-size", "batch_size"),
        eval_batch_size=flag("--eval-batch-size", "eval_batch_size"),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "prehab rehab --model {input.models:q} --schedule {wildcards.lora}"
        " --rank {params.rank} --alpha {params.alpha} --dropout {params.dropout}"
        " --seed {wildcards.seed} {params.steps} {params.lr} {params.batch_size}"
        " --evaluate {params.eval_batch_size} {params.arch_opts} --out {params.outs} > {log} 2>&1"
