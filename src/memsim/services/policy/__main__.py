"""python -m memsim.services.policy: the OOM/policy service process."""

from memsim.runtime.server import run_service
from memsim.services.policy.server import policy_service

if __name__ == "__main__":
    run_service("policy", policy_service)
