"""The security kit: escape probes run as submissions, with their expected containment."""
