"""The service: wires the core to the adapters and drives each submission to its end."""
