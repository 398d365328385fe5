# tinymatch: one-command setup, tests, the report pipeline and JupyterLab.
# Every target after `setup` uses the project's own virtual environment in .venv/.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TM     := $(BIN)/tinymatch
PROFILE ?= cpu
RUN_DIR ?= runs/$(PROFILE)
# Dataset: DATA=..., else $TINYMATCH_DATA, else the shared copy beside the repo, else data/ (downloaded).
DATA ?= $(or $(TINYMATCH_DATA),$(wildcard ../shared/data/tiny-imagenet-200-train.zip),data/tiny-imagenet-200.zip)

# Extra finished run directories for the report's loss comparison table (e.g. a batch-hard run).
COMPARE ?=
# A `tinymatch tune` study directory for the report's tuning-study part (e.g. runs/studies/cpu-short).
STUDY ?=
# A `tinymatch ablate` directory for the report's ablation part (e.g. runs/ablation).
ABLATION ?=
# Extra flags for `tinymatch report` (`make reference` passes --publish).
REPORT_FLAGS ?=

.PHONY: setup system-packages test report reference data lab notebooks bench clean-venv

setup: system-packages $(BIN)/tinymatch

$(BIN)/tinymatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all]'
	@touch $@

# Headless Chromium renders the PDF report. Installed with apt-get when we are root on Debian/Ubuntu;
# otherwise say what is missing (the HTML report still renders without it).
system-packages:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	  echo "chromium: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium fonts-dejavu-core >/dev/null && echo "chromium: installed"; \
	else \
	  echo "chromium: not found; install Debian's 'chromium' package for the PDF report"; \
	fi

# Two pytest workers, a test file each (module fixtures stay shared within a file): alone the
# suite keeps about one of the two cores busy (TensorFlow start-up, subprocesses, notebook kernels).
TEST_WORKERS ?= 2
test: $(BIN)/tinymatch
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

data: $(BIN)/tinymatch
	@[ -e "$(DATA)" ] || $(TM) download --data "$(DATA)"
	$(TM) data --data "$(DATA)"

# Everything the report writes stays in $(RUN_DIR): executed notebooks, figs/, report.html, report.pdf.
report: $(BIN)/tinymatch
	@[ -e "$(DATA)" ] || [ "$(PROFILE)" = smoke ] || $(TM) download --data "$(DATA)"
	$(TM) report --profile $(PROFILE) $(if $(filter smoke,$(PROFILE)),,--data "$(DATA)") --out $(RUN_DIR) \
	  $(foreach run,$(COMPARE),--compare $(run)) $(if $(STUDY),--study $(STUDY)) \
	  $(if $(ABLATION),--ablation $(ABLATION)) $(REPORT_FLAGS)

# The committed reference: train, store the weights at float16 precision (about half the float32
# file) before anything is evaluated, render the report from exactly those weights, publish it
# (reports/report.html, reports/report.pdf, figs/: the only target that writes them) and keep the
# run's config, metrics, history, training summary, error analysis (and both models, when each is under 5 MiB) in reports/reference/. With
# STUDY and ABLATION, their study.db and ablation.json are kept as reports/study/ and
# reports/ablation/, so a later re-render can pass STUDY=reports/study ABLATION=reports/ablation
# (run directories are not committed).
reference: $(BIN)/tinymatch
	@[ -e "$(DATA)" ] || $(TM) download --data "$(DATA)"
	$(TM) train --profile $(PROFILE) --data "$(DATA)" --out $(RUN_DIR)
	@if [ -e $(RUN_DIR)/metrics.json ]; then echo "$(RUN_DIR) already evaluated: weights kept as they are"; \
	  else $(TM) half-precision $(RUN_DIR); fi
	$(MAKE) report PROFILE=$(PROFILE) RUN_DIR=$(RUN_DIR) DATA="$(DATA)" COMPARE="$(COMPARE)" STUDY="$(STUDY)" ABLATION="$(ABLATION)" REPORT_FLAGS=--publish
	mkdir -p reports/reference
	cp $(RUN_DIR)/config.json $(RUN_DIR)/metrics.json $(RUN_DIR)/history.csv $(RUN_DIR)/training.json reports/reference/
	@# The error analysis carries the class-bootstrap intervals a later report's seed spread reads.
	@if [ -e $(RUN_DIR)/error_analysis.json ]; then cp $(RUN_DIR)/error_analysis.json reports/reference/; fi
	@# Model files go in only under 5 MiB each (the repository takes no large weights).
	@for m in model.keras siamese.keras; do rm -f reports/reference/$$m; \
	  if [ $$(stat -c %s $(RUN_DIR)/$$m) -le 5242880 ]; then cp $(RUN_DIR)/$$m reports/reference/; \
	  else echo "$(RUN_DIR)/$$m is over 5 MiB: not copied into reports/reference/"; fi; done

# JupyterLab refuses to start as root unless told; the README's setup runs as root.
lab: $(BIN)/tinymatch
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root,)

# Each notebook and its jupytext .py twin (notebooks/jupytext.toml): regenerate whichever is older.
notebooks: $(BIN)/tinymatch
	$(BIN)/jupytext --sync notebooks/*.ipynb

bench: $(BIN)/tinymatch
	$(BIN)/python benchmarks/bench_loss.py --out benchmarks/results/loss.json
	$(BIN)/python benchmarks/bench_eval.py --out benchmarks/results/eval.json
	$(BIN)/python benchmarks/bench_data.py "$(DATA)" --out benchmarks/results/data.json
	$(BIN)/python benchmarks/bench_train.py --data "$(DATA)" --json benchmarks/results/train.json

clean-venv:
	rm -rf $(VENV)
