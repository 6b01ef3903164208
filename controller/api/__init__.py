"""The REST API (FastAPI): thin; parse, call the service, render."""
