"""Development-only helpers for the demo, the tests and the benchmarks: a local SeaweedFS S3 server,
sample photos and an offline pretrained checkpoint. Not part of the `batchinfer` package (nothing in
src/ imports it; the wheel and the image leave it out); importable from the repository root."""
