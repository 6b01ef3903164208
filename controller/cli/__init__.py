"""The ``sandgate`` command: thin; parse, call the service, print."""
