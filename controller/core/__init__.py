"""The pure core: the lifecycle's rules and records.

It imports the standard library, pydantic, rfc8785 and itself (with ``controller.errors``)
only; ``tests/unit/test_architecture.py`` holds it to that.
"""
