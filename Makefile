# Shortcuts; each sets up .venv itself through dev.py (Python 3.10+ is all it needs).
.PHONY: demo test lint bench bench-quick

demo:
	python3 dev.py demo

test:
	python3 dev.py test

lint:
	python3 dev.py lint

bench:
	python3 dev.py bench

bench-quick:
	python3 dev.py bench --quick
