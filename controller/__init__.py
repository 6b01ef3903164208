"""Sandgate: a sandboxed code-execution controller.

The pure core (``models``, ``lifecycle``, ``gate``, ``validation``, ``receipts``, ``ports``)
imports no adapter. Adapters (``runtime``, ``store``, ``signing``, ``policy``, ``workspace``,
``images``, ``cli``) live at the edge and are wired together by ``service``.
"""

__version__ = "0.1.0"
