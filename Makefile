.PHONY: setup demo test test-slow test-frameworks bench
setup:
	bash scripts/setup.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
test-slow:
	bash scripts/test.sh -m slow
test-frameworks:  # real torch / tensorflow-cpu training on 2 local nodes: pip install them into .venv first
	bash scripts/test.sh -m frameworks tests/frameworks
bench: setup
	.venv/bin/python bench/local_cluster.py
