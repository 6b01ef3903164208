# The two commands: `make run` (the controller's main job) and `make test` (the whole suite).
.PHONY: run test setup lint docker-down bench

run:
	scripts/run.sh

test:
	scripts/test.sh

setup:
	scripts/setup.sh

lint:
	.venv/bin/ruff check controller tests benchmarks
	.venv/bin/mypy controller

docker-down:
	scripts/docker-down.sh
