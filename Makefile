# `make demo` and `make test` do all the set-up themselves (scripts/setup.sh).
VENV := .venv/bin
KW := $(VENV)/kubewire
# mypy --strict covers the whole package, not only the pure core.
TYPED := src/kubewire

.PHONY: setup demo test lint typecheck unit root clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(KW) down quickstart >/dev/null 2>&1 || true
	$(KW) up -f examples/quickstart/
	$(KW) get pods -A -o wide
	$(KW) check
	$(KW) apply -f examples/services/
	$(KW) get svc,endpointslices -n shop
	$(KW) exec client -- dig +short web.shop.svc.cluster.local
	$(KW) exec client -- getent hosts external.test
	@echo
	@echo "The lab keeps running. Try:  $(KW) exec client -- ip route"
	@echo "                             $(KW) exec host/external -- curl -s <web-lb EXTERNAL-IP>/"
	@echo "Remove it with:              $(KW) down quickstart"

lint: setup
	$(VENV)/ruff check src tests bench

typecheck: setup
	$(VENV)/mypy $(TYPED)

unit: setup
	$(VENV)/pytest -q tests/unit

root: setup
	$(VENV)/pytest -q tests/root

test: setup lint typecheck
	$(VENV)/pytest -q tests

clean:
	-$(KW) down --all
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
