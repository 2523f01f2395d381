# Two commands do all the set-up on a fresh machine (no GPU needed):
#   make run   -- create .venv from requirements.txt when missing, then start the app on the zoo
#   make test  -- the same, plus Debian's chromium for the browser tests, then the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: run test venv chromium lint bench

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -r requirements.txt
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) app.py

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; }

# pytest exit code 5 means "no tests ran": that is a failure, not a pass.
test: venv chromium
	$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: venv
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
