# batchinfer — every target installs what it needs into the project venv (.venv), pinned by constraints.txt
# (the job's runtime) and constraints-test.txt (what the tests add); `make lock` compiles both from pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
IMAGE ?= batchinfer:0.1.0
IMAGE_CPU ?= batchinfer:0.1.0-cpu
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: help venv demo test test-unit test-slow chart-test chart-render bench bench-scale bench-profile image image-cpu image-e2e kind-up kind-e2e kind-down cluster-build cluster-up cluster-e2e cluster-down cluster-env lock

help:
	@echo "make demo        run the job on the embedded default (local S3 server, local Ray, sample photos)"
	@echo "make test        the test gate (under 10 minutes): pure + integration (core, reliability, chart, Ctrl-C, stalls)"
	@echo "make test-unit   the pure tier: every test that needs no S3 server, Ray cluster or Docker, wherever it lives"
	@echo "make test-slow   the slow tier: faults, load, autoscaling, driver memory, input kinds on 2 CPUs, Ctrl-C phases, bench smoke, demo (CI runs it after make test)"
	@echo "make chart-render  regenerate k8s/rayjob.yaml from the chart's defaults"
	@echo "make chart-test  helm lint/template + schema checks of the chart and k8s/ manifests"
	@echo "make bench       benchmark: pipeline vs model-only ceiling vs naive baseline"
	@echo "make bench-scale scale stage: N tiny objects (SCALE_COUNTS=10000,100000,1000000), job vs read_images"
	@echo "make bench-profile  where the CPU goes per image (by process: listing, decode, actor, write, Ray's own), job vs read_images at PROFILE_COUNT=100000"
	@echo "make image       build the GPU image;  make image-cpu  the CPU (kind) variant"
	@echo "make image-e2e   build the image and run head/worker/submitter containers against local S3"
	@echo "make kind-up / kind-e2e / kind-down   local Kubernetes (kind) end to end"
	@echo "make cluster-up / cluster-e2e / cluster-down   a real single-node Kubernetes built here from upstream (k8s/local)"
	@echo "make venv        build .venv from the pins (every target does it first);  make lock  re-resolve them (LOCK_ARGS=--upgrade: newest)"

$(STAMP): pyproject.toml constraints.txt constraints-test.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24"
	$(BIN)/pip install -q -c constraints.txt -c constraints-test.txt -e ".[test]"
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m devkit.demo

test: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not integration"

test-slow: $(STAMP)
	$(BIN)/python -m pytest tests -m slow

chart-test: $(STAMP)
	$(BIN)/python -m pytest tests/chart

chart-render: $(STAMP)
	$(BIN)/python -m tests.chart.render

bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

SCALE_COUNTS ?= 10000,100000,1000000
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale --counts $(SCALE_COUNTS) $(BENCH_ARGS)

PROFILE_COUNT ?= 100000
bench-profile: $(STAMP)
	$(BIN)/python -m bench.scale --counts $(PROFILE_COUNT) --label profile $(BENCH_ARGS)

lock: $(STAMP)
	$(BIN)/python -m devkit.lock $(LOCK_ARGS)

image:
	bash docker/build.sh --tag $(IMAGE)

image-cpu:
	bash docker/build.sh --tag $(IMAGE_CPU) --cpu

image-e2e: $(STAMP)
	bash docker/e2e.sh

kind-up:
	bash k8s/kind/up.sh

kind-e2e: $(STAMP)
	bash k8s/kind/e2e.sh

kind-down:
	bash k8s/kind/down.sh

# A single-node Kubernetes from upstream parts on this machine (k8s/local/cluster.sh; needs root).
cluster-build:
	bash k8s/local/cluster.sh build

cluster-up: $(STAMP)
	bash k8s/local/cluster.sh up

cluster-e2e: $(STAMP)
	BATCHINFER_CLUSTER_E2E=1 $(BIN)/python -m pytest tests/cluster -v -s -p no:cacheprovider

cluster-down:
	bash k8s/local/cluster.sh down

cluster-env:
	@bash k8s/local/cluster.sh env
