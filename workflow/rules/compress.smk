rule compress_svd:
    """Plain SVD truncation of the dense model (no calibration)."""
    input:
        model=rules.pretrain.output.model,
    output:
        model=run_file(SVD, "model.pt"),
        metrics=run_file(SVD, "metrics.json"),
    log:
        log_file(SVD, "compress_svd"),
    benchmark:
        benchmark_file(SVD, "compress_svd")
    conda:
        "../../envs/prehab.yaml"
    params:
        out=lambda wildcards, output: os.path.dirname(output.model),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "prehab compress --method svd --model {input.model:q} --ratio {wildcards.ratio}"
        " {params.arch_opts} --out {params.out:q} > {log} 2>&1"


rule compress_svd_llm:
    """SVD-LLM truncation of the dense model or of a Prehab/control model, whitened with the
    calibration its folder sits under (re-done on the Prehab/control model if `recalibrate`).
    """
    input:
        model=svd_llm_source,
        grams=svd_llm_grams,
    output:
        model=run_file(SVD_LLM, "model.pt"),
        metrics=run_file(SVD_LLM, "metrics.json"),
    log:
        log_file(SVD_LLM, "compress_svd_llm"),
    benchmark:
        benchmark_file(SVD_LLM, "compress_svd_llm")
    conda:
        "../../envs/prehab.yaml"
    params:
        out=lambda wildcards, output: os.path.dirname(output.model),
        arch_opts=arch_opts,
        code=CODE,
    shell:
        "prehab compress --method svd-llm --model {input.model:q} --grams {input.grams:q}"
        " --ratio {wildcards.ratio} {params.arch_opts} --out {params.out:q} > {log} 2>&1"
