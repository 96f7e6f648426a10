"""python -m memsim.services.mmu: the MMU service process."""

from memsim.runtime.server import run_service
from memsim.services.mmu.server import mmu_service

if __name__ == "__main__":
    run_service("mmu", mmu_service)
