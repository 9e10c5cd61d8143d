"""The benchmark harness: model-only ceiling, decode-only rate, batchinfer end to end and a naive Ray Data
baseline, measured in one run on one machine (`python -m bench.run`, `make bench`)."""
