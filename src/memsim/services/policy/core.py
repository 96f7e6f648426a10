"""The policy service's state in one object: the sysctls, Committed_AS, the
memory cgroups and whether the machine has panicked.

Pure and synchronous, like the modules it joins. After a panic every
mutating call raises Panicked with the panic line until reboot().
"""

from __future__ import annotations

from collections.abc import Iterable

from memsim.services.policy.badness import HZ, Task
from memsim.services.policy.errors import Panicked
from memsim.services.policy.memcg import MemCgroups
from memsim.services.policy.oom import (
    Decision,
    OomRequest,
    OomSettings,
    Panic,
    TaskTable,
    out_of_memory,
)
from memsim.services.policy.overcommit import (
    CommitCheck,
    CommitLedger,
    MemState,
    meminfo_lines,
    vm_commit_limit,
)
from memsim.services.policy.sysctl import Change, Sysctls


class Policy:
    def __init__(self, sysctls: Sysctls, *, page_size: int = 4096, hz: int = HZ) -> None:
        self.sysctls = sysctls
        self.page_size = page_size
        self.hz = hz
        self.ledger = CommitLedger()
        self.cgroups = MemCgroups(page_size)
        self.panic_message: str | None = None

    # -- panic -------------------------------------------------------------------

    def check_running(self) -> None:
        """Raises Panicked once the machine has panicked."""
        if self.panic_message is not None:
            raise Panicked(self.panic_message)

    def panic(self, message: str) -> None:
        self.panic_message = message

    def reboot(self) -> None:
        """Boot state: default sysctls, nothing committed, no cgroups."""
        self.sysctls.reset()
        self.ledger.reset()
        self.cgroups.reset()
        self.panic_message = None

    # -- sysctls -------------------------------------------------------------------

    def set_sysctl(self, name: str, value_text: str, admin: bool) -> list[Change]:
        self.check_running()
        return self.sysctls.set(name, value_text, admin)

    def apply_conf(
        self, text: str, admin: bool, filename: str = "/etc/sysctl.conf"
    ) -> list[Change]:
        self.check_running()
        return self.sysctls.apply_conf(text, admin, filename)

    # -- commit accounting ---------------------------------------------------------

    def vm_enough_memory(
        self, pid: int, pages: int, mem: MemState, *, cap_sys_admin: bool, total_vm: int
    ) -> CommitCheck:
        """Check and charge pid for pages; a refusal is ENOMEM."""
        self.check_running()
        return self.ledger.check_and_charge(
            pid, pages, mem, self.sysctls, cap_sys_admin=cap_sys_admin, total_vm=total_vm
        )

    def vm_unacct_memory(self, pid: int, pages: int) -> None:
        self.ledger.uncharge(pid, pages)

    def exit_task(self, pid: int) -> int:
        """A process is gone: its commit and its cgroup membership go too
        (its pages' cgroup charges come back through uncharge)."""
        self.cgroups.detach(pid)
        return self.ledger.release(pid)

    def commit_limit(self, mem: MemState) -> int:
        return vm_commit_limit(mem, self.sysctls.overcommit_ratio, self.sysctls.overcommit_kbytes)

    def meminfo(self, mem: MemState) -> list[str]:
        """The CommitLimit and Committed_AS lines of /proc/meminfo."""
        return meminfo_lines(self.commit_limit(mem), self.ledger.committed, self.page_size)

    # -- the OOM killer ------------------------------------------------------------

    @property
    def oom_settings(self) -> OomSettings:
        return OomSettings.from_sysctls(self.sysctls, hz=self.hz, page_size=self.page_size)

    def out_of_memory(self, tasks: Iterable[Task] | TaskTable, req: OomRequest) -> Decision:
        """Decide; a Panic decision also panics the machine."""
        self.check_running()
        decision = out_of_memory(tasks, req, self.oom_settings)
        if isinstance(decision, Panic):
            self.panic(decision.message)
        return decision
