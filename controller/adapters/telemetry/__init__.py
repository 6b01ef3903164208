"""Telemetry adapters: Prometheus metrics (prometheus-client) and OpenTelemetry traces
(opentelemetry-sdk, exported over OTLP/HTTP)."""
