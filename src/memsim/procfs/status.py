"""/proc/PID/status (fs/proc/array.c proc_pid_status of 2.6.24).

The lines, in the kernel's order and with its printf formats:

- task_name: "Name:\t" and comm (at most TASK_COMM_LEN - 1 = 15 characters),
  a backslash doubled and a newline printed as "\\n";
- task_state: "State:\t%s" (task_state_array), "Tgid:\t%d", "Pid:\t%d",
  "PPid:\t%d", "TracerPid:\t%d", "Uid:\t%d\t%d\t%d\t%d" (real, effective, saved,
  fs), "Gid:" the same, "FDSize:\t%d", "Groups:\t" and "%d " per group (the
  first NGROUPS_SMALL = 32) before the newline;
- task_mem (fs/proc/task_mmu.c), only for a task with an mm (kernel threads
  have none): "VmPeak:\t%8lu kB" ... "VmPTE:\t%8lu kB", then "VmSwap:\t%8lu kB",
  which 2.6.24 does not have: it came in 2.6.34, printed after VmPTE as here;
- task_sig: "Threads:\t%d", "SigQ:\t%lu/%lu", then SigPnd, ShdPnd, SigBlk,
  SigIgn, SigCgt by render_sigset_t: _NSIG = 64 signals, one hex digit per
  four, signal n as bit n - 1, so 16 digits;
- task_cap: "CapInh:\t%016x", "CapPrm:\t%016x", "CapEff:\t%016x" of the
  32-bit kernel_cap_t of 2.6.24 (64-bit capabilities came in 2.6.25);
- cpuset_task_status_allowed (kernel/cpuset.c, CONFIG_CPUSETS):
  "Cpus_allowed:\t" cpumask_scnprintf, "Mems_allowed:\t" nodemask_scnprintf;
- task_context_switch_counts: "voluntary_ctxt_switches:\t%lu",
  "nonvoluntary_ctxt_switches:\t%lu".
"""

from __future__ import annotations

from dataclasses import dataclass, field

TASK_COMM_LEN = 16
NGROUPS_SMALL = 32

# task_state_array; get_task_state picks one from the state bits.
TASK_STATES = {
    "R": "R (running)",
    "S": "S (sleeping)",
    "D": "D (disk sleep)",
    "T": "T (stopped)",
    "Z": "Z (zombie)",
    "X": "X (dead)",
}
_STATE_STRINGS = frozenset(TASK_STATES.values()) | {"T (tracing stop)"}


@dataclass(frozen=True)
class ProcessStatus:
    """What /proc/PID/status shows of one task; sizes in kB, masks as ints.

    state is a letter of TASK_STATES or one of the kernel's full strings
    ("T (tracing stop)" has no letter of its own). euid, suid and fsuid
    (and the gid ones) default to uid (gid), as for a task that never
    changed identity. cpus_allowed is printed over nr_cpus bits (NR_CPUS,
    Kconfig default 8 on x86 in 2.6.24) and mems_allowed over max_numnodes
    bits (MAX_NUMNODES: 1 without NUMA, 1 << CONFIG_NODES_SHIFT with it).
    """

    name: str
    state: str
    pid: int
    ppid: int
    tgid: int
    uid: int
    gid: int
    vm_peak_kb: int
    vm_size_kb: int
    vm_lck_kb: int
    vm_hwm_kb: int
    vm_rss_kb: int
    vm_data_kb: int
    vm_stk_kb: int
    vm_exe_kb: int
    vm_lib_kb: int
    vm_pte_kb: int
    vm_swap_kb: int
    threads: int
    cap_inh: int
    cap_prm: int
    cap_eff: int
    cpus_allowed: int
    mems_allowed: int
    nr_cpus: int = 8
    max_numnodes: int = 1
    tracer_pid: int = 0
    euid: int | None = None
    suid: int | None = None
    fsuid: int | None = None
    egid: int | None = None
    sgid: int | None = None
    fsgid: int | None = None
    fd_size: int = 32  # NR_OPEN_DEFAULT = BITS_PER_LONG until the table grows
    groups: tuple[int, ...] = field(default=())
    has_mm: bool = True  # False for a kernel thread: no Vm lines at all
    sigq_queued: int = 0  # user->sigpending
    sigq_limit: int = 0  # RLIMIT_SIGPENDING (max_threads / 2 by default)
    sig_pnd: int = 0
    shd_pnd: int = 0
    sig_blk: int = 0
    sig_ign: int = 0
    sig_cgt: int = 0
    voluntary_ctxt_switches: int = 0
    nonvoluntary_ctxt_switches: int = 0


def escape_comm(name: str) -> str:
    """task_name: comm as the kernel keeps it (15 characters), \\ and \\n escaped."""
    comm = name[: TASK_COMM_LEN - 1]
    return comm.replace("\\", "\\\\").replace("\n", "\\n")


def task_state_string(state: str) -> str:
    if state in TASK_STATES:
        return TASK_STATES[state]
    if state in _STATE_STRINGS:
        return state
    raise ValueError(f"unknown task state {state!r}: expected one of {', '.join(TASK_STATES)}")


def format_bitmap(mask: int, nbits: int) -> str:
    """lib/bitmap.c bitmap_scnprintf: exactly nbits bits, hex in 32-bit chunks joined by ','.

    The first (most significant) chunk has (nbits % 32 or 32) bits and as
    many hex digits as that needs; every other chunk has 8 digits.
    """
    if nbits < 1:
        raise ValueError(f"a bitmap has at least one bit, not {nbits}")
    if not 0 <= mask < 1 << nbits:
        raise ValueError(f"mask {mask:#x} does not fit in {nbits} bits")
    chunks = []
    chunksz = nbits % 32 or 32
    i = ((nbits + 31) // 32 - 1) * 32
    while i >= 0:
        val = (mask >> i) & ((1 << chunksz) - 1)
        chunks.append(f"{val:0{(chunksz + 3) // 4}x}")
        chunksz = 32
        i -= 32
    return ",".join(chunks)


def _sigset(mask: int) -> str:
    # render_sigset_t over _NSIG = 64: 16 hex digits, signal n is bit n - 1.
    if not 0 <= mask < 1 << 64:
        raise ValueError(f"signal set {mask:#x} does not fit in 64 signals")
    return f"{mask:016x}"


def _cap(value: int) -> str:
    if not 0 <= value < 1 << 32:
        raise ValueError(f"capability set {value:#x} does not fit 2.6.24's 32-bit kernel_cap_t")
    return f"{value:016x}"


def format_status(s: ProcessStatus) -> str:
    uids = [s.uid] + [s.uid if v is None else v for v in (s.euid, s.suid, s.fsuid)]
    gids = [s.gid] + [s.gid if v is None else v for v in (s.egid, s.sgid, s.fsgid)]
    lines = [
        f"Name:\t{escape_comm(s.name)}",
        f"State:\t{task_state_string(s.state)}",
        f"Tgid:\t{s.tgid}",
        f"Pid:\t{s.pid}",
        f"PPid:\t{s.ppid}",
        f"TracerPid:\t{s.tracer_pid}",
        "Uid:\t" + "\t".join(map(str, uids)),
        "Gid:\t" + "\t".join(map(str, gids)),
        f"FDSize:\t{s.fd_size}",
        "Groups:\t" + "".join(f"{g} " for g in s.groups[:NGROUPS_SMALL]),
    ]
    if s.has_mm:
        vm = [
            ("VmPeak", s.vm_peak_kb),
            ("VmSize", s.vm_size_kb),
            ("VmLck", s.vm_lck_kb),
            ("VmHWM", s.vm_hwm_kb),
            ("VmRSS", s.vm_rss_kb),
            ("VmData", s.vm_data_kb),
            ("VmStk", s.vm_stk_kb),
            ("VmExe", s.vm_exe_kb),
            ("VmLib", s.vm_lib_kb),
            ("VmPTE", s.vm_pte_kb),
            ("VmSwap", s.vm_swap_kb),  # 2.6.34's line, after VmPTE as it prints it
        ]
        for label, kb in vm:
            if kb < 0:
                raise ValueError(f"{label} is unsigned, not {kb}")
            lines.append(f"{label}:\t{kb:8d} kB")
    lines += [
        f"Threads:\t{s.threads}",
        f"SigQ:\t{s.sigq_queued}/{s.sigq_limit}",
        f"SigPnd:\t{_sigset(s.sig_pnd)}",
        f"ShdPnd:\t{_sigset(s.shd_pnd)}",
        f"SigBlk:\t{_sigset(s.sig_blk)}",
        f"SigIgn:\t{_sigset(s.sig_ign)}",
        f"SigCgt:\t{_sigset(s.sig_cgt)}",
        f"CapInh:\t{_cap(s.cap_inh)}",
        f"CapPrm:\t{_cap(s.cap_prm)}",
        f"CapEff:\t{_cap(s.cap_eff)}",
        f"Cpus_allowed:\t{format_bitmap(s.cpus_allowed, s.nr_cpus)}",
        f"Mems_allowed:\t{format_bitmap(s.mems_allowed, s.max_numnodes)}",
        f"voluntary_ctxt_switches:\t{s.voluntary_ctxt_switches}",
        f"nonvoluntary_ctxt_switches:\t{s.nonvoluntary_ctxt_switches}",
    ]
    return "\n".join(lines) + "\n"
