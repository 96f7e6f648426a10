"""Frames from the zone service, as the MMU needs them: one port, two adapters
(the zone over gRPC, or the zone allocator in process for tests)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import grpc

from memsim.services.mmu.commit import ZoneReserve, totalreserve_pages
from memsim.services.mmu.errors import MachineHalted, NoMemory
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.errors import OutOfMemory
from memsim.services.zone.router import ZoneCalls


class ZonePort(Protocol):
    async def alloc(
        self,
        gfp_mask: int,
        count: int,
        cpu: int,
        extra: int = 0,
        *,
        pid: int = 0,
        nodes: Sequence[int] = (),
        mempolicy_nodes: Sequence[int] = (),
    ) -> list[int]:
        """count order-0 frames, all or none: NoMemory if the zone has fewer;
        and up to extra more if the zone has them to spare (a list refill).
        pid and nodes: the process they are for, and where it may have them
        (its cpuset); mempolicy_nodes: its MPOL_BIND nodes (empty: none)."""
        ...

    async def free(self, pfns: Iterable[int], cpu: int, cold: bool = False) -> None:
        """cold: to the cold end of the CPU's lists, as reclaimed pages go."""
        ...

    async def alloc_block(
        self,
        gfp_mask: int,
        order: int,
        cpu: int,
        *,
        pid: int = 0,
        nodes: Sequence[int] = (),
        mempolicy_nodes: Sequence[int] = (),
    ) -> int:
        """One physically contiguous block of 2^order pages (no-MMU mmap) for
        pid, on its nodes."""
        ...

    async def free_block(self, pfn: int, order: int, cpu: int) -> None: ...

    async def free_pages(self) -> int:
        """Pages free in the whole machine (for messages that say why)."""
        ...

    async def counters(self) -> tuple[int, int]:
        """(nr_free_pages, totalreserve_pages) of the whole machine, for the
        commit check's cached copy (read in the background, never per call)."""
        ...


def _raise_halted(exc: grpc.aio.AioRpcError) -> None:
    """A zone that refuses because the machine panicked: the caller is told
    so, with the panic line (FAILED_PRECONDITION), not an unknown error."""
    if exc.code() is grpc.StatusCode.FAILED_PRECONDITION:
        raise MachineHalted(exc.details() or "Kernel panic") from None


class _ZoneAdapter:
    """What both adapters do the same way over their zone's free call: frees
    of single pages and of blocks, and alloc's all or none."""

    async def _free_blocks(self, blocks: list[tuple[int, int]], cpu: int, cold: bool) -> None:
        raise NotImplementedError

    async def free(self, pfns: Iterable[int], cpu: int, cold: bool = False) -> None:
        blocks = [(pfn, 0) for pfn in pfns]
        if blocks:
            await self._free_blocks(blocks, cpu, cold)

    async def free_block(self, pfn: int, order: int, cpu: int) -> None:
        await self._free_blocks([(pfn, order)], cpu, False)

    async def _all_or_none(self, got: list[int], count: int, cpu: int) -> list[int]:
        """The frames got if they are count or more; else they go back: NoMemory."""
        if len(got) < count:
            await self.free(got, cpu)
            raise NoMemory(f"the zone allocator had {len(got)} of {count} frames")
        return got


class GrpcZone(_ZoneAdapter):
    def __init__(self, client: ZoneCalls) -> None:
        self.client = client

    async def alloc(
        self,
        gfp_mask: int,
        count: int,
        cpu: int,
        extra: int = 0,
        *,
        pid: int = 0,
        nodes: Sequence[int] = (),
        mempolicy_nodes: Sequence[int] = (),
    ) -> list[int]:
        try:
            got = [
                pfn
                for pfn, _ in await self.client.alloc(
                    gfp_mask,
                    0,
                    count,
                    cpu,
                    extra,
                    pid=pid,
                    nodes=nodes,
                    mempolicy_nodes=mempolicy_nodes,
                )
            ]
        except grpc.aio.AioRpcError as exc:
            _raise_halted(exc)
            if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise NoMemory(f"the zone allocator has no frames: {exc.details()}") from None
            raise
        return await self._all_or_none(got, count, cpu)

    async def _free_blocks(self, blocks: list[tuple[int, int]], cpu: int, cold: bool) -> None:
        await self.client.free(blocks, cpu, cold)

    async def alloc_block(
        self,
        gfp_mask: int,
        order: int,
        cpu: int,
        *,
        pid: int = 0,
        nodes: Sequence[int] = (),
        mempolicy_nodes: Sequence[int] = (),
    ) -> int:
        try:
            ((pfn, _),) = await self.client.alloc(
                gfp_mask, order, 1, cpu, pid=pid, nodes=nodes, mempolicy_nodes=mempolicy_nodes
            )
        except grpc.aio.AioRpcError as exc:
            _raise_halted(exc)
            if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise NoMemory(str(exc.details())) from None
            raise
        return pfn

    async def free_pages(self) -> int:
        info = await self.client.zoneinfo()
        return sum(z.free_pages for node in info.nodes for z in node.zones)

    async def counters(self) -> tuple[int, int]:
        info = await self.client.zoneinfo()
        zones = [z for node in info.nodes for z in node.zones]
        reserve = totalreserve_pages(
            ZoneReserve(z.present_pages, z.high_pages, list(z.lowmem_reserve_pages)) for z in zones
        )
        return sum(z.free_pages for z in zones), reserve


class LocalZone(_ZoneAdapter):
    def __init__(self, allocator: ZoneAllocator) -> None:
        self.allocator = allocator

    async def alloc(
        self,
        gfp_mask: int,
        count: int,
        cpu: int,
        extra: int = 0,
        *,
        pid: int = 0,
        nodes: Sequence[int] = (),
        mempolicy_nodes: Sequence[int] = (),
    ) -> list[int]:
        try:
            got = await self.allocator.alloc_pages(
                gfp_mask,
                0,
                count,
                cpu,
                extra=extra,
                pid=pid,
                nodes=tuple(nodes),
                mempolicy_nodes=tuple(mempolicy_nodes),
            )
        except OutOfMemory as exc:
            raise NoMemory(str(exc)) from None
        return await self._all_or_none([pfn for a in got for pfn in a.pfns], count, cpu)

    async def _free_blocks(self, blocks: list[tuple[int, int]], cpu: int, cold: bool) -> None:
        await self.allocator.free_pages(blocks, cpu, cold)

    async def alloc_block(
        self,
        gfp_mask: int,
        order: int,
        cpu: int,
        *,
        pid: int = 0,
        nodes: Sequence[int] = (),
        mempolicy_nodes: Sequence[int] = (),
    ) -> int:
        try:
            (allocation,) = await self.allocator.alloc_pages(
                gfp_mask,
                order,
                1,
                cpu,
                pid=pid,
                nodes=tuple(nodes),
                mempolicy_nodes=tuple(mempolicy_nodes),
            )
        except OutOfMemory as exc:
            raise NoMemory(str(exc)) from None
        return allocation.pfns[0]

    async def free_pages(self) -> int:
        return sum(z.free_pages for z in self.allocator.machine.zones.values())

    async def counters(self) -> tuple[int, int]:
        zones = self.allocator.machine.zones.values()
        reserve = totalreserve_pages(
            ZoneReserve(z.present, z.marks.high, z.lowmem_reserve) for z in zones
        )
        return sum(z.free_pages for z in zones), reserve
