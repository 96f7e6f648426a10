"""The Backend that performs ops on a running machine: processes through the
process client library (memsim.clients.process), kernel objects through the
slab service's client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memsim.clients.process.errors import OutOfMemory
from memsim.clients.process.process import (
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    Process,
)
from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.services.slab.client import SlabClient

if TYPE_CHECKING:
    from memsim.mmu.v1.mmu_pb2_grpc import MmuAsyncStub

LOAD_UID = 1000  # the simulated processes are an ordinary user's


@dataclass(frozen=True)
class MachineInfo:
    page_size: int
    nommu: bool


@dataclass(frozen=True)
class KernelObjects:
    cache: str  # "" for kmalloc
    addresses: tuple[int, ...]


async def machine_info(mmu: MmuAsyncStub, profile: str | None = None) -> MachineInfo:
    """The page size, and whether the machine has no MMU (from the profile's
    name when known, else from init having no page tables)."""
    stats = await mmu.GetStats(pb.GetStatsRequest())
    nommu = profile == "nommu" if profile else stats.page_table_pages == 0
    return MachineInfo(stats.page_size_bytes, nommu)


class MachineBackend:
    def __init__(self, mmu: MmuAsyncStub, slab: SlabClient, page_size: int) -> None:
        self.mmu = mmu
        self.slab = slab
        self.page_size = page_size

    async def execute(self, op: str, args: dict[str, Any], resolve: Callable[[int], Any]) -> Any:
        proc: Process | None = resolve(args["proc"]) if "proc" in args else None
        if op == "spawn":
            new = await Process.spawn(self.mmu, args["name"], uid=LOAD_UID)
            # With the page size known, malloc need not ask for it.
            return Process(self.mmu, new.pid, new.token, new.name, page_size=self.page_size)
        if op == "kmalloc":
            response = await self.slab.kmalloc(args["size"], args["count"])
            return KernelObjects("", tuple(response.addresses))
        if op == "kfree":
            await self.slab.kfree(resolve(args["obj"]).addresses)
            return None
        if op == "create_cache":
            await self.slab.create_cache(args["name"], args["size"])
            return args["name"]
        if op == "cache_alloc":
            name = resolve(args["cache"])
            return KernelObjects(name, tuple(await self.slab.cache_alloc(name, args["count"])))
        if op == "cache_free":
            objects: KernelObjects = resolve(args["obj"])
            await self.slab.cache_free(objects.cache, objects.addresses)
            return None
        if op == "destroy_cache":
            await self.slab.destroy_cache(resolve(args["cache"]))
            return None
        assert proc is not None, op
        if op == "fork":
            return await proc.fork()
        if op == "exit":
            return await proc.exit()
        if op == "mmap":
            flags = (MAP_SHARED if args["shared"] else MAP_PRIVATE) | MAP_ANONYMOUS
            return await proc.mmap(args["length"], PROT_READ | PROT_WRITE, flags)
        if op == "malloc":
            address = await proc.malloc(args["size"])
            if address == 0:
                raise OutOfMemory(f"malloc({args['size']}) returned NULL (ENOMEM)")
            return address
        base: int = resolve(args["at"])
        if op == "free":
            await proc.free(base)
            return None
        address = base + args["offset"]
        if op == "munmap":
            await proc.munmap(address, args["length"])
        elif op == "touch":
            await proc.touch(address, args["length"], read_only=args["read_only"])
        elif op == "write":
            await proc.write(address, bytes([args["fill"]]) * args["length"])
        elif op == "read":
            await proc.read(address, args["length"])
        else:
            raise ValueError(f"unknown op {op!r}")
        return None
