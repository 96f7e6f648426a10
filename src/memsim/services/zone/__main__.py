"""python -m memsim.services.zone: the zone service process."""

from memsim.runtime.server import run_service
from memsim.services.zone.server import zone_service

if __name__ == "__main__":
    run_service("zone", zone_service)
