# Two entry points: `make demo` (the main job on the embedded synthetic data) and `make test`.
# Both create their own virtual environment in .venv on first use (torch first, then every extra a
# CPU machine installs). `make core`: `pip install .` without extras in a fresh venv runs parse,
# validate and evaluate --predictions (the CI step).
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch for machines without a GPU; GPU machines: TORCH_SPEC="torch" (or preinstall).
TORCH_SPEC ?= torch==2.13.0
OUT ?= out/demo

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[all,test]"
	touch $@

.PHONY: venv demo demo-rl test core
venv: $(VENV)/.installed

demo: venv
	HF_HUB_OFFLINE=1 $(PY) -m nyxmed demo --out $(OUT)

# The GRPO stage on what `make demo` left in $(OUT): before/after on its benchmark (docs/training.md).
demo-rl: venv
	HF_HUB_OFFLINE=1 $(PY) bench/grpo_gain.py --demo-out $(OUT) --steps $(or $(RL_STEPS),100)

test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

core:
	bash .ci/core-install
