"""python -m memsim.services.echo: the echo service process."""

from memsim.runtime.server import run_service
from memsim.services.echo.server import echo_service

if __name__ == "__main__":
    run_service("echo", echo_service)
