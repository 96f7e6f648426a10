"""python -m memsim.runtime.healthcheck ADDRESS...: asks the standard gRPC
health service whether each server serves.

Exit status 0 when every address answers SERVING, 1 otherwise (NOT_SERVING,
an unknown service name, nothing listening, no answer within the timeout).
One line per address on stdout says what it answered. Containers use it as
their health check (docker-compose.yml) and to wait for the services they
call (the Kubernetes init containers, with --wait).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memsim.runtime.config import ConfigError, parse_address

SERVING = health_pb2.HealthCheckResponse.SERVING
DEFAULT_TIMEOUT_S = 2.0
RETRY_INTERVAL_S = 1.0


def check(
    address: str, service: str = "", timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[bool, str]:
    """(serving, what the server answered or why it did not) for one address;
    service "" is the whole server."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return False, code.name if code is not None else type(exc).__name__
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == SERVING, status


def wait_serving(
    addresses: Sequence[str],
    service: str = "",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    wait_s: float = 0.0,
) -> list[tuple[str, bool, str]]:
    """Each address checked; with wait_s > 0, checked again every second until
    all serve or wait_s has passed. The last answer of each."""
    deadline = time.monotonic() + wait_s
    while True:
        results = [(address, *check(address, service, timeout_s)) for address in addresses]
        if all(ok for _, ok, _ in results) or time.monotonic() >= deadline:
            return results
        time.sleep(min(RETRY_INTERVAL_S, max(deadline - time.monotonic(), 0.0)))


def _address(value: str) -> str:
    try:
        parse_address(value, "ADDRESS")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m memsim.runtime.healthcheck",
        description="Exit 0 when every ADDRESS answers SERVING to grpc.health.v1.Health/Check.",
    )
    parser.add_argument("addresses", metavar="ADDRESS", nargs="+", type=_address, help="host:port")
    parser.add_argument(
        "--service", default="", help="the service name to ask about (default: the whole server)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds each check may take (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep checking every second until all serve, for at most SECONDS (default 0: once)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = wait_serving(args.addresses, args.service, args.timeout, args.wait)
    for address, _, status in results:
        print(f"{address}: {status}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
