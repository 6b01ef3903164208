"""The names that identify a Sandgate receipt (no dependencies, shared with the writer)."""

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://sandgate.dev/receipt/v1"
TERMINAL_STATES = frozenset({"committed", "rolled_back", "quarantined", "denied"})

# A rotation record: the outgoing key hands over to the incoming one from a given sequence.
# Its own payload type, so that no signature over a receipt can be passed off as one.
ROTATION_PAYLOAD_TYPE = "application/vnd.sandgate.key-rotation+json"
ROTATION_TYPE = "https://sandgate.dev/key-rotation/v1"
# A signed tree head over the log (RFC 6962 Merkle tree hash of the receipts).
CHECKPOINT_PAYLOAD_TYPE = "application/vnd.sandgate.checkpoint+json"
CHECKPOINT_TYPE = "https://sandgate.dev/checkpoint/v1"
