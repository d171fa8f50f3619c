.PHONY: setup demo test test-slow bench
setup:
	bash scripts/setup.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
test-slow:
	bash scripts/test.sh -m slow
bench: setup
	.venv/bin/python bench/local_cluster.py
