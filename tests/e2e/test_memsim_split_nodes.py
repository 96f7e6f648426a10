"""memsim up --profile numa --split-nodes: a zone and a buddy service per
node, as a user starts, reads, loads and stops them."""

from __future__ import annotations

import asyncio
import json

from memsim.clients.process.process import Process
from memsim.runtime.channel import open_channel
from tests.e2e.harness import Cli

MIB = 1 << 20
SERVICES = ("buddy-0", "buddy-1", "policy", "zone-0", "zone-1", "slab", "mmu")


def free_by_node(zoneinfo: str) -> dict[int, int]:
    """Free pages of each node from /proc/zoneinfo."""
    free: dict[int, int] = {}
    node = -1
    for line in zoneinfo.splitlines():
        if line.startswith("Node "):
            node = int(line.split()[1].rstrip(","))
        elif line.split()[:2] == ["pages", "free"]:
            free[node] = free.get(node, 0) + int(line.split()[2])
    return free


def test_split_nodes_machine_serves_both_nodes_and_stops_cleanly(cli: Cli) -> None:
    up = cli.run(
        "up", "--profile", "numa", "--mem", "256M", "--split-nodes", "-d", "--ephemeral-ports"
    )
    assert up.returncode == 0, up.stderr
    pids = cli.recorded_pids()
    try:
        assert len(pids) == 7
        assert all(cli.pid_alive(p) for p in pids)
        state = json.loads((cli.run_dir / "machine.json").read_text())
        assert tuple(state["services"]) == SERVICES

        buddyinfo = cli.run("cat", "/proc/buddyinfo")
        assert buddyinfo.returncode == 0, buddyinfo.stderr
        nodes = [line.split(",")[0] for line in buddyinfo.stdout.splitlines()]
        assert nodes == ["Node 0", "Node 0", "Node 1"]  # DMA, DMA32; DMA32

        zoneinfo = cli.run("cat", "/proc/zoneinfo")
        assert zoneinfo.returncode == 0, zoneinfo.stderr
        at_boot = free_by_node(zoneinfo.stdout)
        assert set(at_boot) == {0, 1}
        vmstat = dict(line.split() for line in cli.run("cat", "/proc/vmstat").stdout.splitlines())
        assert int(vmstat["nr_free_pages"]) == sum(at_boot.values())
        meminfo = cli.run("cat", "/proc/meminfo")
        assert meminfo.returncode == 0, meminfo.stderr
        free_kb = int(meminfo.stdout.splitlines()[1].split()[1])
        assert free_kb == sum(at_boot.values()) * 4

        async def touch() -> None:
            async with open_channel(state["services"]["mmu"]["address"]) as channel:
                proc = await Process.spawn(channel, "toucher")
                address = await proc.mmap(32 * MIB)
                for offset in range(0, 32 * MIB, 4 * MIB):
                    await proc.touch(address + offset, 4 * MIB)
                touched = free_by_node(cli.run("cat", "/proc/zoneinfo").stdout)
                assert sum(touched.values()) < sum(at_boot.values()) - 32 * MIB // 4096 // 2
                await proc.exit()

        asyncio.run(touch())
        ps = cli.run("ps")
        assert [row.split()[-1] for row in ps.stdout.splitlines()[1:]] == ["init"]
    finally:
        down = cli.run("down")
    assert down.returncode == 0, down.stderr
    for name, pid in zip(SERVICES, pids, strict=True):
        assert f"{name}: stopped pid {pid}" in down.stdout
    assert not any(cli.pid_alive(p) for p in pids)
    assert not (cli.run_dir / "machine.json").exists()
    after = cli.run("cat", "/proc/buddyinfo")
    assert after.returncode == 1
    assert "no machine is running" in after.stderr
