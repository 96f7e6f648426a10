"""memsim's load workloads as Locust users, so that load from many machines runs
on Locust's distributed mode (one master, many workers) instead of a home-made
coordinator.

    memsim up -d
    locust -f src/memsim/clients/locustfile.py --headless -u 16 -r 4 -t 1m

    # many machines: the master forwards the --memsim-* options to its workers
    locust -f .../locustfile.py --master --headless --expect-workers 2 -u 64 -r 8 -t 5m \\
        --memsim-mix pressure --memsim-mmu HOST:PORT --memsim-slab HOST:PORT
    locust -f .../locustfile.py --worker --master-host MASTER      # on each load machine

Options (each also read from an environment variable):
    --memsim-mix       a shipped mix or workload, or a TOML path (MEMSIM_LOAD_MIX; default)
    --memsim-seed      the seed of every user's choices (MEMSIM_LOAD_SEED; 0)
    --memsim-mmu       the mmu service's address (MEMSIM_MMU_ADDR)
    --memsim-slab      the slab service's address (MEMSIM_SLAB_ADDR)
    --memsim-deadline  seconds a call may take (MEMSIM_LOAD_DEADLINE; 60)
An address left empty is that of the machine `memsim up` runs on this host
(its run directory), else the service's default port on loopback. Only the mmu
and the slab service are called: the workloads talk to nothing else.

Each user is one simulated process slot of `memsim load` (clients/load/): it
follows one workload of the mix, the workloads' own code over the Ops facade,
through the same MachineBackend. The n-th user started on worker w of W
(W: --expect-workers) takes the workload and the seeded Random of position
n*W + w of the mix's smooth weighted round-robin, which is the order in which
Locust's master hands users out to its workers: so a fleet runs the mix in
its proportions even with few users, and position k runs the choices of
`memsim load`'s process k. One Locust task is one life of the simulated
process: its workload until the workload ends or its process dies (the OOM
killer), then what it left behind exits; the next task starts it again.

Statistics: request type "grpc", named after the op (spawn, malloc, touch,
kmalloc...), response time the call's. Expected refusals are outcomes, not
errors, as in `memsim load`: they count as successes under a name of their own,
"<op> ENOMEM" (RESOURCE_EXHAUSTED, malloc returning NULL) and "<op> killed" (the
process was gone: the OOM killer took it), so that their rate and latency show
next to the calls that succeeded. Everything else (SIGSEGV, EINVAL, ESRCH,
EPERM, a panic, a transport error) is a failure of the op's name whose error
names the outcome and the status code. A failure therefore always means
something unexpected, and Locust's exit code (1 when anything failed) says so.

gevent: Locust runs users as greenlets on a monkey-patched gevent, which
grpc.aio and asyncio's event loop do not share a thread with. The workloads are
coroutines, but every await in them is an RPC, so they run unchanged over
synchronous gRPC calls without any event loop (load/sync_machine.py): grpc's
sync API with `grpc.experimental.gevent.init_gevent()`, called below before any
channel is made, blocks only the calling greenlet.

Stopping: Locust stops a user by killing its greenlet (GreenletExit), which
lands in the call in flight. That call is let finish and is counted (else a
process spawned or forked on the machine could be lost); the workload stops
at its next call, and on_stop exits the user's processes and frees its kernel
objects, so a finished run leaves the machine with init alone.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from gevent import GreenletExit, sleep
from locust import User, constant, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

from memsim.clients.load.machine import MachineBackend, MachineInfo
from memsim.clients.load.ops import EXPECTED, OK, Ops, ProcessDied, Result, Stop
from memsim.clients.load.runner import slot_rng
from memsim.clients.load.schema import Burst, LoadFileError, Mix, Workload, load_mix
from memsim.clients.load.sync_machine import (
    AwaitableChannel,
    open_sync_channel,
    run_sync,
    sync_backend,
)
from memsim.clients.load.workloads import WORKLOADS, Context
from memsim.runtime.config import peer_address

grpc_gevent.init_gevent()  # before any channel: sync calls then block only their greenlet

REQUEST_TYPE = "grpc"
DEFAULT_DEADLINE_S = 60.0  # an OOM round or a swap storm can take a while (as memsim load)

_channels: dict[str, grpc.Channel] = {}
_mixes: dict[str, Mix] = {}
_started = itertools.count()  # users started in this process


class UnexpectedOutcome(Exception):
    """A call that ended neither ok nor with an expected refusal."""


@events.init_command_line_parser.add_listener
def _arguments(parser: LocustArgumentParser, **_: Any) -> None:
    parser.add_argument(
        "--memsim-mix",
        env_var="MEMSIM_LOAD_MIX",
        default="default",
        help="memsim: a shipped mix (default, pressure, kernel) or workload, or a TOML path",
    )
    parser.add_argument(
        "--memsim-seed",
        env_var="MEMSIM_LOAD_SEED",
        type=int,
        default=0,
        help="memsim: the seed of every user's choices",
    )
    parser.add_argument(
        "--memsim-mmu",
        env_var="MEMSIM_MMU_ADDR",
        default="",
        help="memsim: the mmu service's address (default: the machine `memsim up` runs here)",
    )
    parser.add_argument(
        "--memsim-slab",
        env_var="MEMSIM_SLAB_ADDR",
        default="",
        help="memsim: the slab service's address (default: the machine `memsim up` runs here)",
    )
    parser.add_argument(
        "--memsim-deadline",
        env_var="MEMSIM_LOAD_DEADLINE",
        type=float,
        default=DEFAULT_DEADLINE_S,
        help="memsim: seconds one call may take",
    )


@events.init.add_listener
def _check_mix(environment: Environment, **_: Any) -> None:
    """A bad mix ends the master (or a standalone run) at start, its error
    naming the line; a worker takes the master's value when the test starts."""
    options = environment.parsed_options
    if options is not None and not isinstance(environment.runner, WorkerRunner):
        try:
            mix_named(options.memsim_mix)
        except LoadFileError as exc:
            raise SystemExit(f"memsim: --memsim-mix: {exc}") from None


@events.quitting.add_listener
def _close_channels(**_: Any) -> None:
    for channel in _channels.values():
        channel.close()
    _channels.clear()


def mix_named(spec: str) -> Mix:
    """The mix, loaded once per process (LoadFileError names file and line)."""
    mix = _mixes.get(spec)
    if mix is None:
        mix = _mixes[spec] = load_mix(spec)
    return mix


def service_address(service: str, given: str) -> str:
    """The option's address; else the machine `memsim up` runs on this host;
    else the service's default (MEMSIM_<SERVICE>_ADDR or its port on loopback)."""
    if given:
        return given
    from memsim.clients.cli.machine import running_machine

    state = running_machine()
    if state is not None and service in state.services:
        return state.services[service].address
    return peer_address(service)


def shared_channel(address: str) -> grpc.Channel:
    """One synchronous channel per address in this process, shared by its users."""
    channel = _channels.get(address)
    if channel is None:
        channel = _channels[address] = open_sync_channel(address)
    return channel


def position(started: int, environment: Environment) -> int:
    """The mix position of the `started`-th user of this process: n*W + w on
    worker w of W, the order in which the master deals users to its workers."""
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):
        return started
    options = environment.parsed_options
    expected = int(getattr(options, "expect_workers", 1) or 1)
    workers = max(expected, runner.worker_index + 1)
    return started * workers + runner.worker_index


def request_name(op: str, outcome: str) -> str:
    """The statistics' name of a call: the op; an expected refusal apart."""
    return op if outcome == OK or outcome not in EXPECTED else f"{op} {outcome}"


class UserSession:
    """The Session of ops.Ops for one Locust user: no budget (Locust's -t
    ends the run), bursts paced with gevent, every call a Locust request."""

    def __init__(self, user: MemsimUser, burst: Burst | None) -> None:
        self.user = user
        self.burst = burst
        self._burst_left = 0
        self.stop_event = asyncio.Event()  # Ops reads it only to pace bursts, which this does

    @property
    def in_flight(self) -> asyncio.Semaphore | None:
        return None

    def ticket(self) -> None:
        """Stop once the user is stopping; between bursts, idle (a stop
        arriving then ends the idling and the workload)."""
        if self.user.stopping:
            raise Stop
        if self.burst is None:
            return
        if self._burst_left <= 0:
            if self.burst.idle_s > 0:
                try:
                    sleep(self.burst.idle_s)
                except GreenletExit:
                    self.user.stopping = True
                    raise Stop from None
            self._burst_left = self.burst.ops
        self._burst_left -= 1

    def complete(
        self,
        slot: int,
        op: str,
        args: dict[str, Any],
        ret: int | None,
        result: Result,
        latency_s: float,
        message: str,
    ) -> None:
        exception = None
        if result.outcome not in EXPECTED:
            exception = UnexpectedOutcome(f"{result.outcome} ({result.code}): {message}")
        self.user.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=request_name(op, result.outcome),
            response_time=latency_s * 1000.0,
            response_length=0,
            exception=exception,
            context={"slot": slot, "outcome": result.outcome, "code": result.code},
        )


class MemsimUser(User):
    """One simulated process slot following a workload of the mix."""

    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.stopping = False
        self.ops: Ops | None = None
        self.workload: Workload | None = None
        self.info = MachineInfo(4096, False)
        self.process_name = ""
        self.rng = random.Random()

    def _wait(self, future: grpc.Future[Any]) -> Any:
        """Wait for a call in flight; a stop (GreenletExit) lets it finish
        first, and the workload stops at its next call."""
        while True:
            try:
                return future.result()
            except GreenletExit:
                self.stopping = True

    def on_start(self) -> None:
        options = self.environment.parsed_options
        assert options is not None
        mix = mix_named(options.memsim_mix)
        index = position(next(_started), self.environment)
        workload = mix.assign(index + 1)[index]
        deadline_s = float(options.memsim_deadline)
        mmu, slab = (
            AwaitableChannel(
                shared_channel(service_address(name, given)), deadline_s=deadline_s, wait=self._wait
            )
            for name, given in (("mmu", options.memsim_mmu), ("slab", options.memsim_slab))
        )
        backend: MachineBackend
        backend, self.info = sync_backend(mmu, slab)
        self.workload = workload
        self.process_name = f"{workload.name}{index}"
        self.rng = slot_rng(int(options.memsim_seed), index)
        self.ops = Ops(index, backend, UserSession(self, workload.burst))

    @task
    def live(self) -> None:
        """One life of the simulated process: its workload until the workload
        ends or its process dies; then what it left behind exits."""
        ops, workload = self.ops, self.workload
        assert ops is not None
        assert workload is not None
        context = Context(
            ops, self.rng, workload.params, self.info.page_size, self.info.nommu, self.process_name
        )
        try:
            run_sync(WORKLOADS[workload.kind](context))
        except ProcessDied:
            pass  # the OOM killer took it (counted as "<op> killed"): the next task starts again
        except Stop:
            raise StopUser from None
        run_sync(ops.reap())
        if self.stopping:
            raise StopUser

    def on_stop(self) -> None:
        """Exit the processes still alive, free the kernel objects still held."""
        self.stopping = True
        if self.ops is not None:
            run_sync(self.ops.cleanup())
