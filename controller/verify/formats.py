"""The names that identify a Sandgate receipt (no dependencies, shared with the writer)."""

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://sandgate.dev/receipt/v1"
TERMINAL_STATES = frozenset({"committed", "rolled_back", "quarantined", "denied"})
