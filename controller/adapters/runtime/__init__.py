"""Container runtimes behind ``ports.SandboxRuntime``: Docker for real, a fake for unit tests."""
