"""Does compression hurt each embedded testbed enough for a method to show? Prints, from the
`testbeds` study table, dense vs SVD-LLM at R = 0.6: the gap and the gap over the seed-to-seed
standard deviation of the compressed metric (the package issue asks for >= 3).

    .venv/bin/python scripts/testbed_gaps.py [results/testbeds/testbeds.csv]
"""

import sys

import pandas as pd

table = pd.read_csv(sys.argv[1] if len(sys.argv) > 1 else "results/testbeds/testbeds.csv")
print(f"{'arch':12s} {'metric':10s} {'dense':>16s} {'SVD-LLM R=0.6':>18s} {'gap':>9s} {'gap/std':>8s}")
for arch, rows in table.groupby("arch", sort=False):
    dense = rows[rows.method == "dense"].iloc[0]
    svdllm = rows[(rows.method == "svd-llm") & (rows.ratio == 0.6)].iloc[0]
    gap = abs(dense["mean"] - svdllm["mean"])
    print(f"{arch:12s} {dense['metric']:10s} {dense['mean']:9.4f} ± {dense['std']:.4f} "
          f"{svdllm['mean']:11.4f} ± {svdllm['std']:.4f} {gap:9.4f} {gap / svdllm['std']:8.1f}   (n={int(svdllm['n'])})")
