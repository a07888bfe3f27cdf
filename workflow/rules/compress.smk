rule compress_svd:
    """Plain SVD truncation of the dense model (no calibration) at every ratio, each evaluated."""
    input:
        model=rules.pretrain.output.model,
    output:
        models=big_models(per_ratio(SVD, MODEL_FILE, RATIOS)),
        metrics=per_ratio(SVD, METRICS_FILE, RATIOS),
        evals=per_ratio(SVD, EVAL_METRICS, RATIOS),
    log:
        log_file(SVD, "compress_svd"),
    benchmark:
        benchmark_file(SVD, "compress_svd")
    conda:
        "../../envs/prehab.yaml"
    params:
        prehab=PREHAB,
        ratios=RATIOS,
        outs=out_dirs,
        eval_batch_size=flag("--eval-batch-size", "eval_batch_size"),
        eval_precision=flag("--eval-precision", "eval_precision"),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "{params.prehab} compress --method svd --model {input.model:q} --ratio {params.ratios}"
        " --evaluate {params.eval_batch_size} {params.eval_precision} {params.arch_opts} --out {params.outs} > {log} 2>&1"


rule compress_svd_llm:
    """SVD-LLM truncation of the dense model or of a Prehab/control model at every ratio, each
    evaluated, whitened with the calibration its folder sits under (re-done on the
    Prehab/control model if `recalibrate`). Each output's metrics.json carries the mechanism
    readout (`mech_*`: the whitened tail at k(R), energy, movement from the dense model) and
    mechanism.json its per-layer values.
    """
    input:
        model=svd_llm_source,
        grams=svd_llm_grams,
        reference=rules.pretrain.output.model,
    output:
        models=big_models(per_ratio(SVD_LLM, MODEL_FILE, RATIOS)),
        metrics=per_ratio(SVD_LLM, METRICS_FILE, RATIOS),
        evals=per_ratio(SVD_LLM, EVAL_METRICS, RATIOS),
    log:
        log_file(SVD_LLM, "compress_svd_llm"),
    benchmark:
        benchmark_file(SVD_LLM, "compress_svd_llm")
    conda:
        "../../envs/prehab.yaml"
    params:
        prehab=PREHAB,
        ratios=RATIOS,
        outs=out_dirs,
        eval_batch_size=flag("--eval-batch-size", "eval_batch_size"),
        eval_precision=flag("--eval-precision", "eval_precision"),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "{params.prehab} compress --method svd-llm --model {input.model:q} --grams {input.grams:q}"
        " --reference {input.reference:q}"
        " --ratio {params.ratios} --evaluate {params.eval_batch_size} {params.eval_precision} {params.arch_opts}"
        " --out {params.outs} > {log} 2>&1"
