"""Seccomp and resource profiles: load, lint, learn."""
