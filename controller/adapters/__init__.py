"""Adapters at the edge, behind the core's Protocols (``core.ports``)."""
