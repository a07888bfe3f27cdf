"""`python -m prehab`: the same command line as the `prehab` entry point (the workflow's rules
run it this way, with the interpreter that runs Snakemake, so no PATH setup is needed)."""

import sys

from prehab.cli import main

sys.exit(main())
