# Two commands a newcomer needs:  `make demo` (set up + train/predict/evaluate on Bibtex)
# and `make test`. Everything lives in a local virtual environment, .venv/.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default. A GPU user installs their CUDA build of torch into $(VENV) first
# (any torch>=2.4 satisfies pyproject.toml), and setup keeps it.
TORCH ?= torch==2.13.0
# --no-compile: pip byte-compiles every file it installs (torch, ray, pyspark, transformers: tens of
# thousands, 75 s of a fresh 148 s setup here); Python compiles what a process imports, once.
PIP_ARGS ?= -q --disable-pip-version-check --no-compile
RUN_DIR ?= runs/bibtex
DATA := data/bibtex
STORE = sqlite:///$(abspath $(RUN_DIR))/mlflow.db

.PHONY: setup demo ui serve test lint bench bench-peers bench-scale bench-prime clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(PIP_ARGS) "$(TORCH)"
	$(PY) -m pip install $(PIP_ARGS) -e '.[dev]'
	touch $@

demo: setup  # the main job on embedded engines: local Spark -> local Ray -> local MLflow
	$(VENV)/bin/xmc featurize --input $(DATA)/bibtex_train.txt.gz --out $(RUN_DIR)/bundle
	$(VENV)/bin/xmc train --data $(RUN_DIR)/bundle --model $(RUN_DIR)/model --executor ray \
	    --label-names $(DATA)/label_names.txt --validation-fraction 0.1 \
	    --tracking-uri $(STORE) --experiment bibtex-demo --run-name bibtex-demo \
	    --register-as bibtex-demo
	$(VENV)/bin/xmc predict --model $(RUN_DIR)/model --x $(DATA)/X.tst.npz --topk 5 \
	    --out $(RUN_DIR)/pred.npz
	$(VENV)/bin/xmc evaluate --y $(DATA)/Y.tst.npz --pred $(RUN_DIR)/pred.npz --model $(RUN_DIR)/model
	@echo "MLflow UI: make ui   (or $(VENV)/bin/mlflow ui --backend-store-uri $(STORE))"
	@echo "Serve the champion: make serve   (REST on http://127.0.0.1:5001/invocations)"

# mlflow starts uvicorn/gunicorn by name: the venv's bin/ must be on PATH even when it is not activated
ui:
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/mlflow ui --backend-store-uri $(STORE)

serve:
	PATH="$(abspath $(VENV))/bin:$$PATH" MLFLOW_TRACKING_URI=$(STORE) $(VENV)/bin/mlflow models serve \
	    -m models:/bibtex-demo@champion --env-manager local --host 127.0.0.1 --port 5001

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/bibtex.py

bench-peers: setup  # ours vs PECOS, omikuji, napkinXC (their own venv, bench/.peers-venv, made on first use)
	$(PY) bench/compare.py

bench-scale: setup  # fit time, predict throughput, peak memory vs N and L (long: see README, Performance)
	$(PY) bench/scale.py

bench-prime: setup  # the hybrid (--dense prime) beside its own tree, ablations, Ray Train 1 vs 2 workers (long)
	$(PY) bench/prime.py --sets bibtex --ablations --workers 1,2
	$(PY) bench/prime.py --sets bibtex,pypi-tags,debian
	$(PY) bench/prime_senses.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
