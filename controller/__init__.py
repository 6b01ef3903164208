"""Sandgate: a sandboxed code-execution controller.

One folder a layer (``docs/architecture.md``): ``core`` (pure: the lifecycle's rules and
records, and the ports), ``adapters`` (Docker, Cedar, SQLite, the filesystem, signing),
``profiles``, ``service`` (drives each submission through the ports), ``api`` and ``cli``
(thin edges), ``tools`` and ``verify`` (the independent verifier).
"""

__version__ = "0.1.0"
