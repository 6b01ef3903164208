"""Network: sockets of families a sandbox has no use for, and egress of any kind."""

from __future__ import annotations

from controller.tools.probes.probe import attempt, printed

SOCKETS = [
    attempt("socket-packet", "network", "socket.socket(17, socket.SOCK_RAW)",
            printed("errno 1")),
    attempt("socket-raw-icmp", "network",
            "socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
            printed("errno 1")),
    attempt("socket-af-alg", "network", "socket.socket(38, socket.SOCK_SEQPACKET)",
            printed("errno 1")),
    attempt("socket-af-vsock", "network", "socket.socket(40, socket.SOCK_STREAM)",
            printed("errno 1")),
    attempt("socket-netlink", "network", "socket.socket(16, socket.SOCK_RAW, 0)",
            printed("errno 1")),
]
# No packet leaves a sandbox without network: these fail inside the container's own stack.
EGRESS = [
    attempt("egress-metadata-address", "network",
            "socket.create_connection(('169.254.169.254', 80), timeout=3)",
            printed("errno 101", "errno 1")),
    attempt("egress-bridge-gateway-docker-api", "network",
            "socket.create_connection(('172.17.0.1', 2375), timeout=3)",
            printed("errno 101", "errno 1")),
    attempt("egress-bridge-gateway-docker-tls-api", "network",
            "socket.create_connection(('172.17.0.1', 2376), timeout=3)",
            printed("errno 101", "errno 1")),
    attempt("egress-udp", "network",
            "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('172.17.0.1', 53))",
            printed("errno 101", "errno 1")),
    attempt("egress-ipv6", "network",
            "socket.create_connection(('fd00::1', 80), timeout=3)",
            printed("errno 101", "errno 99", "errno 97", "errno 1")),
    attempt("egress-controller-api-port", "network",
            "socket.create_connection(('127.0.0.1', 8080), timeout=3)",
            printed("errno 111", "errno 1"), notes="loopback is the sandbox's own"),
    attempt("dns-resolution", "network",
            "len(socket.getaddrinfo('example.com', 80))",
            printed("errno -2", "errno -3", "errno -5", "errno 101"),
            notes="socket.gaierror carries the resolver's negative code"),
]
