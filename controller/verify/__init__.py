"""The independent receipt verifier.

This package imports only the standard library and ``cryptography`` (a test enforces it):
an auditor can verify Sandgate's receipts without trusting the rest of the controller.
"""
