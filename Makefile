.PHONY: setup demo check test test-slow test-frameworks bench
setup:
	bash scripts/setup.sh
demo:
	bash scripts/demo.sh
check: setup  # ruff (lint, format check) and mypy
	bash scripts/check.sh
test:
	bash scripts/test.sh
test-slow:
	bash scripts/test.sh -m slow
test-frameworks:  # real torch / tensorflow-cpu training on 2 local nodes: pip install them into .venv first
	bash scripts/test.sh -m frameworks tests/frameworks
bench: setup
	.venv/bin/python bench/local_cluster.py
