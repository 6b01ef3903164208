# The two commands: `make run` (the controller's main job) and `make test` (the whole suite).
.PHONY: run demo test setup lint docker-down bench

run:
	scripts/run.sh

demo:
	scripts/demo.sh

test:
	scripts/test.sh

bench:
	scripts/bench.sh

setup:
	scripts/setup.sh

lint:
	.venv/bin/ruff check controller tests benchmarks
	.venv/bin/mypy controller
	.venv/bin/mypy tests benchmarks

docker-down:
	scripts/docker-down.sh
