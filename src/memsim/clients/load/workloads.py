"""The workload kinds: what one simulated process does, call after call.

Each kind is an async function over a Context (the slot's Ops, its own
random.Random, the parameters, the machine's page size). Every choice comes
from that Random and from the outcomes of earlier calls, never from the
clock, so the same seed gives the same calls as long as the machine answers
the same way. The functions loop until Ops raises Stop (the run is over);
ProcessDied for the slot's main process is left to the runner, which
replaces the process with a new one running the same workload.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from memsim.clients.load.ops import ENOMEM, Ops, ProcessDied
from memsim.clients.load.schema import ParamValue


@dataclass
class Context:
    ops: Ops
    rng: random.Random
    params: dict[str, ParamValue]
    page_size: int
    nommu: bool
    name: str

    def number(self, key: str) -> int:
        value = self.params[key]
        assert isinstance(value, int), key
        assert not isinstance(value, bool), key
        return value

    def ratio(self, key: str) -> float:
        value = self.params[key]
        assert isinstance(value, float | int), key
        return float(value)

    def sizes(self, key: str) -> tuple[int, ...]:
        value = self.params[key]
        assert isinstance(value, tuple), key
        return value

    def flag(self, key: str) -> bool:
        value = self.params[key]
        assert isinstance(value, bool), key
        return value

    def text(self, key: str) -> str:
        value = self.params[key]
        assert isinstance(value, str), key
        return value

    def pages(self, size: int) -> int:
        return max(1, -(-size // self.page_size))


Workload = Callable[[Context], Awaitable[None]]


async def steady(c: Context) -> None:
    """malloc and free of a mix of sizes, the blocks written as a program would."""
    ops, rng = c.ops, c.rng
    sizes, max_live = c.sizes("sizes"), c.number("max_live")
    free_ratio, write = c.ratio("free_ratio"), c.flag("write")
    proc = await ops.spawn(c.name)
    live: list[int] = []
    while True:
        if live and (len(live) >= max_live or rng.random() < free_ratio):
            await ops.free(proc, live.pop(rng.randrange(len(live))))
            continue
        size = rng.choice(sizes)
        fill = rng.randrange(256)
        result = await ops.malloc(proc, size)
        if result.ok and result.handle is not None:
            live.append(result.handle)
            if write:
                await ops.write(proc, result.handle, 0, min(size, 256), fill)


async def leak(c: Context) -> None:
    """malloc and write, never free: grows until the OOM killer ends it (or,
    under strict overcommit, until malloc keeps failing: then it exits)."""
    ops = c.ops
    step, give_up = c.number("step"), c.number("give_up_after")
    proc = await ops.spawn(c.name)
    refusals = 0
    while True:
        result = await ops.malloc(proc, step)
        if result.ok and result.handle is not None:
            refusals = 0
            await ops.touch(proc, result.handle, 0, step)
        elif result.outcome == ENOMEM:
            refusals += 1
            if refusals >= give_up:
                await ops.exit(proc)
                return


async def fork_server(c: Context) -> None:
    """A server that fills its memory, then forks children that write a few
    pages each (copy-on-write) and exit, while it reads its own."""
    ops, rng = c.ops, c.rng
    region, max_children = c.number("region"), c.number("children")
    writes, exit_ratio = c.number("child_writes"), c.ratio("exit_ratio")
    pages = c.pages(region)
    proc = await ops.spawn(c.name)
    mapped = await ops.mmap(proc, region)
    if not mapped.ok or mapped.handle is None:
        await ops.exit(proc)
        return
    at = mapped.handle
    await ops.touch(proc, at, 0, region)
    children: list[int] = []
    can_fork = True
    while True:
        x = rng.random()
        try:
            if children and (len(children) >= max_children or x < exit_ratio):
                child = children.pop(rng.randrange(len(children)))
                await ops.exit(child)
            elif can_fork and len(children) < max_children and x < exit_ratio + 0.3:
                forked = await ops.fork(proc)
                if forked.ok and forked.handle is not None:
                    children.append(forked.handle)
                elif forked.outcome != ENOMEM:
                    can_fork = False  # no fork on this machine (no MMU)
            elif children:
                child = rng.choice(children)
                span = min(writes, pages)
                first = rng.randrange(pages - span + 1)
                await ops.touch(child, at, first * c.page_size, span * c.page_size)
            else:
                page = rng.randrange(pages)
                await ops.read(proc, at, page * c.page_size, 64)
        except ProcessDied as died:
            if died.handle not in children:
                raise
            children.remove(died.handle)


async def hog(c: Context) -> None:
    """Maps a big region and touches it chunk by chunk, round after round."""
    ops = c.ops
    region, chunk, rounds = c.number("region"), c.number("chunk"), c.number("rounds")
    proc = await ops.spawn(c.name)
    while True:
        mapped = await ops.mmap(proc, region)
        if not mapped.ok or mapped.handle is None:
            await ops.exit(proc)
            return
        done = 0
        position = 0
        while not rounds or done < rounds:
            length = min(chunk, region - position)
            await ops.touch(proc, mapped.handle, position, length)
            position += length
            if position >= region:
                position = 0
                done += 1
        await ops.munmap(proc, mapped.handle, 0, region)


async def kernel_churn(c: Context) -> None:
    """kmalloc/kfree of a mix of sizes and cache_alloc/cache_free of a cache of
    its own: the kernel's side of the slab, through the slab service."""
    ops, rng = c.ops, c.rng
    sizes, batch = c.sizes("kmalloc_sizes"), c.number("batch")
    max_live, free_ratio = c.number("max_live"), c.ratio("free_ratio")
    created = await ops.create_cache(f"{c.name}-g{ops.generation}", c.number("object_size"))
    cache = created.handle if created.ok else None
    live: list[tuple[str, int]] = []
    while True:
        if live and (len(live) >= max_live or rng.random() < free_ratio):
            kind, handle = live.pop(rng.randrange(len(live)))
            if kind == "kmalloc":
                await ops.kfree(handle)
            else:
                await ops.cache_free(handle)
            continue
        use_cache = cache is not None and rng.random() < 0.5
        size = rng.choice(sizes)
        if use_cache and cache is not None:
            result = await ops.cache_alloc(cache, batch)
            kind = "cache"
        else:
            result = await ops.kmalloc(size, batch)
            kind = "kmalloc"
        if result.ok and result.handle is not None:
            live.append((kind, result.handle))


async def fragmenter(c: Context) -> None:
    """Pins every other page, then asks for high orders.

    On a machine with an MMU: maps and touches a region, unmaps every other
    page (the frames in between stay pinned, so their buddies cannot merge),
    then kmallocs large size classes, whose slabs are high-order blocks
    (size-32768 takes an order-3 block, size-131072 an order-5 one), and
    frees some. On a no-MMU machine every mmap is one physically contiguous
    block: it maps page after page, unmaps every other one, then maps the
    high sizes as blocks of their own."""
    ops, rng = c.ops, c.rng
    mode = c.text("mode")
    if mode == "auto":
        mode = "mmap" if c.nommu else "kmalloc"
    pin, high, max_live = c.number("pin"), c.sizes("high_sizes"), c.number("max_live")
    free_ratio = c.ratio("free_ratio")
    pages = c.pages(pin)
    page = c.page_size
    proc = await ops.spawn(c.name)
    if mode == "kmalloc":
        mapped = await ops.mmap(proc, pages * page)
        if not mapped.ok or mapped.handle is None:
            await ops.exit(proc)
            return
        await ops.touch(proc, mapped.handle, 0, pages * page)
        for i in range(1, pages, 2):
            await ops.munmap(proc, mapped.handle, i * page, page)
    else:
        singles: list[int] = []
        for _ in range(pages):
            one = await ops.mmap(proc, page)
            if one.ok and one.handle is not None:
                singles.append(one.handle)
                await ops.touch(proc, one.handle, 0, page)
        for handle in singles[1::2]:
            await ops.munmap(proc, handle, 0, page)
    live: list[tuple[int, int]] = []
    while True:
        if live and (len(live) >= max_live or rng.random() < free_ratio):
            handle, size = live.pop(rng.randrange(len(live)))
            if mode == "kmalloc":
                await ops.kfree(handle)
            else:
                await ops.munmap(proc, handle, 0, size)
            continue
        size = rng.choice(high)
        result = await (ops.kmalloc(size, 1) if mode == "kmalloc" else ops.mmap(proc, size))
        if result.ok and result.handle is not None:
            live.append((result.handle, size))
            if mode == "mmap":
                await ops.touch(proc, result.handle, 0, size)


async def shm_db(c: Context) -> None:
    """A database over MAP_SHARED memory with forked workers: most accesses
    go to a small hot set of pages, some write."""
    ops, rng = c.ops, c.rng
    region, n_workers = c.number("region"), c.number("workers")
    hot_fraction, hot_ratio = c.ratio("hot_fraction"), c.ratio("hot_ratio")
    write_ratio = c.ratio("write_ratio")
    pages = c.pages(region)
    hot = max(1, int(pages * hot_fraction))
    proc = await ops.spawn(c.name)
    mapped = await ops.mmap(proc, pages * c.page_size, shared=True)
    if not mapped.ok or mapped.handle is None:
        await ops.exit(proc)
        return
    at = mapped.handle
    await ops.touch(proc, at, 0, pages * c.page_size)
    workers: list[int] = []
    for _ in range(n_workers):
        forked = await ops.fork(proc)
        if forked.ok and forked.handle is not None:
            workers.append(forked.handle)
    while True:
        actors = [proc, *workers]
        actor = actors[rng.randrange(len(actors))]
        page = rng.randrange(hot) if rng.random() < hot_ratio else rng.randrange(pages)
        writes = rng.random() < write_ratio
        fill = rng.randrange(256)
        try:
            if writes:
                await ops.write(actor, at, page * c.page_size, 64, fill)
            else:
                await ops.read(actor, at, page * c.page_size, 64)
        except ProcessDied as died:
            if died.handle not in workers:
                raise
            workers.remove(died.handle)


WORKLOADS: dict[str, Workload] = {
    "steady": steady,
    "leak": leak,
    "fork_server": fork_server,
    "hog": hog,
    "kernel_churn": kernel_churn,
    "fragmenter": fragmenter,
    "shm_db": shm_db,
}
