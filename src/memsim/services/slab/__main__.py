"""python -m memsim.services.slab: the slab service process."""

from memsim.runtime.server import run_service
from memsim.services.slab.server import slab_service

if __name__ == "__main__":
    run_service("slab", slab_service)
