localrules:
    choose_lambda,
    mlflow,
    report,


checkpoint choose_lambda:
    """lambda* of a study with confirm_seeds, from its phase-A runs: its phase B's Prehab jobs."""
    input:
        evals=phase_a_metrics,
    output:
        f"{RESULTS}/choice/{{study}}.json",
    log:
        f"{LOGS}/choose_lambda/{{study}}.log",
    conda:
        "../../envs/prehab.yaml"
    params:
        prehab=PREHAB,
        runs=runs_root,
        studies=STUDIES_JSON,
        code=CODE_REPORT,
    shell:
        "{params.prehab} choose-lambda --runs {params.runs:q} --studies {params.studies:q}"
        " --study {wildcards.study:q} --out {output:q} > {log} 2>&1"


rule mlflow:
    """One writer brings the MLflow SQLite db up to date with the runs' metrics.json and the
    report's tables and figures. update(): Snakemake keeps the db (run ids, users' notes) instead of
    deleting it before the job, and puts it back if the job fails."""
    input:
        evals=eval_metrics,
        prehab=prehab_files(METRICS_FILE),
        tables=expand(f"{TABLES}/{{study}}.{{ext}}", study=STUDIES, ext=["csv", "md"]),
        figures=expand(f"{FIGURES}/{{name}}.png", name=FIGURE_NAMES),
    output:
        db=update(MLFLOW_DB),
    log:
        f"{LOGS}/mlflow.log",
    conda:
        "../../envs/prehab.yaml"
    params:
        prehab=PREHAB,
        runs=runs_root,
        studies=STUDIES_JSON,
        artifacts=MLFLOW_ARTIFACTS,
        tables=lambda wildcards, input: os.path.dirname(input.tables[0]),
        figures=lambda wildcards, input: os.path.dirname(input.figures[0]),
        code=CODE_REPORT,
    shell:
        "{params.prehab} mlflow-log --runs {params.runs:q} --studies {params.studies:q}"
        " --db {output.db:q} --artifacts {params.artifacts:q}"
        " --tables {params.tables:q} --figures {params.figures:q} > {log} 2>&1"


rule report:
    """The long results table, one table per enabled study (CSV, Markdown and HTML), the
    mechanism table, the findings page, the fixed figures and the report's captions; the HTML
    report shows the HTML pages and the figures of the enabled studies."""
    input:
        evals=eval_metrics,
        prehab=prehab_files(METRICS_FILE),
        spectra=prehab_files(layout.SPECTRA_FILE),
    output:
        runs=report(
            f"{TABLES}/runs.csv",
            caption=caption("runs"),
            category="Tables",
            labels={"table": "all runs (CSV)"},
        ),
        csv=expand(f"{TABLES}/{{study}}.csv", study=STUDIES),
        md=expand(f"{TABLES}/{{study}}.md", study=STUDIES),
        html=[
            report(
                f"{TABLES}/{study}.html",
                caption=caption(f"study-{study}"),
                category="Tables",
                labels={"table": study},
            )
            for study in STUDIES
        ],
        mechanism=[
            f"{TABLES}/mechanism.csv",
            f"{TABLES}/mechanism.md",
            report(
                f"{TABLES}/mechanism.html",
                caption=caption("mechanism"),
                category="Tables",
                labels={"table": "mechanism"},
            ),
        ],
        findings=[
            f"{TABLES}/findings.md",
            report(
                f"{TABLES}/findings.html",
                caption=caption("findings"),
                category="Findings",
                labels={"page": "findings"},
            ),
        ],
        figures=[
            (
                report(
                    f"{FIGURES}/{name}.png",
                    caption=caption(f"figure-{name}"),
                    category="Figures",
                    labels={"figure": name},
                )
                if name in REPORTED_FIGURES
                else f"{FIGURES}/{name}.png"
            )
            for name in FIGURE_NAMES
        ],
        captions=directory(CAPTIONS),
    log:
        f"{LOGS}/report.log",
    conda:
        "../../envs/prehab.yaml"
    params:
        prehab=PREHAB,
        runs=runs_root,
        studies=STUDIES_JSON,
        tables=lambda wildcards, output: os.path.dirname(output.runs),
        figures=lambda wildcards, output: os.path.dirname(output.figures[0]),
        code=CODE_REPORT,
    shell:
        "{params.prehab} report --runs {params.runs:q} --studies {params.studies:q}"
        " --tables {params.tables:q} --figures {params.figures:q} --captions {output.captions:q}"
        " > {log} 2>&1"
