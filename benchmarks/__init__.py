"""pnas-eval's benchmarks: the pipeline against the seed's recipe and against its own limits.

`python -m benchmarks` (or `make bench`) runs every benchmark on this machine and writes
`benchmarks/results.md` and `benchmarks/throughput.png`; `python -m benchmarks --smoke` runs the same
code on tiny sizes in seconds (what CI runs) and writes to a temporary folder or `--out DIR`.

Every figure is a ratio of two things measured in the same run, alternated round by round and the
best round of each kept, so that a noisy machine moves both sides alike. One module per benchmark:

    backends     1. onnxruntime against PyTorch eager, per batch size (and 7. on a GPU, with --gpu)
    pipeline     2. the infer stage end to end against the backend's pure compute on the same shard
    preprocess   3. shard bytes per image against the seed's .bin; 4. shard stage against the seed's recipe
    aggregation  5. scoring 50,000 results against a per-file parser in the seed's style
    planning     6. a PnasEval of 1,000 shards -> Job manifests, and the API objects they make
"""
