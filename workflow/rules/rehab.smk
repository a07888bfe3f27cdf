rule rehab:
    """LoRA recovery (joint or sequential, merged afterwards) of one model compressed at every
    LoRA ratio, each evaluated."""
    input:
        models=per_ratio(COMPRESSED, MODEL_FILE, LORA_RATIOS),
    output:
        models=big_models(per_ratio(COMPRESSED, f"{LORA}/{MODEL_FILE}", LORA_RATIOS)),
        metrics=per_ratio(COMPRESSED, f"{LORA}/{METRICS_FILE}", LORA_RATIOS),
        evals=per_ratio(COMPRESSED, f"{LORA}/{EVAL_METRICS}", LORA_RATIOS),
    log:
        log_file(COMPRESSED, "rehab_{lora}"),
    benchmark:
        benchmark_file(COMPRESSED, "rehab_{lora}")
    priority: 1  # run as soon as its models exist: they are temp() and big (llama-small)
    conda:
        "../../envs/prehab.yaml"
    resources:
        runtime=training_resource("rehab", "runtime"),
        mem_mb=training_resource("rehab", "mem_mb"),
        gpu=gpu_request("rehab", "gpu"),
        gres=gpu_request("rehab", "gres"),
        nodes=training_resource("rehab", "nodes"),
        tasks=task_count("rehab"),
        tasks_per_gpu=0,  # the executor plugin would otherwise ask for --ntasks-per-gpu=tasks
    params:
        prehab=launcher("rehab"),
        compute=compute_flags,
        outs=out_dirs,
        lora=section_flags("lora", ["rank", "alpha", "dropout"]),
        steps=flag("--steps", "rehab_steps"),
        lr=flag("--lr", "rehab_lr"),
        batch_size=flag("--batch-size", "batch_size"),
        eval_batch_size=flag("--eval-batch-size", "eval_batch_size"),
        eval_precision=flag("--eval-precision", "eval_precision"),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "{params.prehab} rehab --model {input.models:q} --schedule {wildcards.lora}"
        " {params.lora}"
        " --seed {wildcards.seed} {params.steps} {params.lr} {params.batch_size} {params.compute}"
        " --evaluate {params.eval_batch_size} {params.eval_precision} {params.arch_opts} --out {params.outs} > {log} 2>&1"
