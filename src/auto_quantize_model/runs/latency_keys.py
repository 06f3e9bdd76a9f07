"""Key names of a seed's ``latency.json`` (``SeedRoot.latency_json``, written by the latency stage): one spelling
for the writer and every reader.

:mod:`auto_quantize_model.latency` writes these keys; the summary reads them through the same constants. Import-free
on purpose, like :mod:`auto_quantize_model.runs.metrics_keys`.
"""

from __future__ import annotations

SCHEMA_VERSION = "schema_version"

# One entry per timed file, keyed by its artifact label (RunRoot's "<variant>-<weights format>").
FILES = "files"
PATH = "path"
SHA256 = "sha256"
PROVIDERS = "providers"  # session.get_providers() of that file's session: what really ran it
MEDIAN_MS = "median_ms"
MIN_MS = "min_ms"
MAX_MS = "max_ms"
P25_MS = "p25_ms"
P75_MS = "p75_ms"
RUNS_MS = "runs_ms"  # every timed session.run, in round order
INPUT = "input"  # {shape, dtype, content} of the batch that file was timed on

# How the files were timed (the same for all of them).
ROUNDS = "rounds"  # timed runs per file; each round runs every file once, the starting file rotating
WARMUP_RUNS = "warmup_runs"  # untimed runs per file before the first round
THREADS = "intra_op_threads"  # resolved intra-op threads of every session (one run at a time)
FOLD_WEIGHTS = "fold_weights"
PROVIDERS_REQUESTED = "providers_requested"
ALLOW_PROVIDER_FALLBACK = "allow_provider_fallback"
ORDER = "order"
CPUS = "cpus"  # CPUs this process could run on
LOAD_AVG_1MIN = "load_avg_1min"  # {before, after, min, median, max}: sampled before each round and after the last
LOAD_BEFORE = "before"
LOAD_AFTER = "after"
LOAD_MIN = "min"
LOAD_MEDIAN = "median"
LOAD_MAX = "max"
VERSIONS = "versions"
MEASURED_AT = "measured_at"
