"""python -m memsim.services.buddy: the buddy service process."""

from memsim.runtime.server import run_service
from memsim.services.buddy.server import buddy_service

if __name__ == "__main__":
    run_service("buddy", buddy_service)
