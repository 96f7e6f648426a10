"""`memsim load` end to end: the real command against `memsim up -d`."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from memsim.runtime.channel import open_channel
from memsim.services.buddy.client import BuddyClient
from memsim.services.zone.client import ZoneClient
from tests.e2e.harness import Cli

pytestmark = pytest.mark.e2e


def up(cli: Cli, *args: str) -> None:
    result = cli.run("up", "-d", "--ephemeral-ports", *args)
    assert result.returncode == 0, result.stderr


def down(cli: Cli) -> None:
    result = cli.run("down")
    assert result.returncode == 0, result.stderr


def test_load_runs_the_default_mix_and_writes_its_summary(cli: Cli, tmp_path: Path) -> None:
    up(cli, "--mem", "128M")
    try:
        out = tmp_path / "out.json"
        args = ("load", "--mix", "default", "--processes", "4", "--ops", "300", "--seed", "7")
        result = cli.run(*args, "--output", str(out))
        assert result.returncode == 0, result.stderr
        assert re.search(r"memsim load: \d+ calls", result.stdout), result.stdout
        assert "stopped by ops" in result.stdout
        summary = json.loads(out.read_text())
        assert summary["workload_calls"] == 300
        assert summary["calls"] >= 300
        assert summary["stopped_by"] == "ops"
        assert summary["unexpected_errors"] == 0, summary
        assert summary["mix"] == "default"
        assert summary["seed"] == 7
        assert summary["throughput_per_s"] > 0
        assert summary["latency_ms"]["p99"] >= summary["latency_ms"]["p50"] > 0
        ops = summary["ops"]
        assert {"spawn", "malloc", "kmalloc", "fork"} <= set(ops)
        # The clean-up's calls come on top of the 300 of the budget.
        assert sum(o["calls"] for o in ops.values()) >= 300
        assert summary["free_bytes"]["start"] > 0
        # The clean-up exited every process: only init is left.
        ps = cli.run("ps")
        assert ps.returncode == 0, ps.stderr
        assert len(ps.stdout.strip().splitlines()) == 2, ps.stdout
        # CSV too.
        csv_out = tmp_path / "out.csv"
        result = cli.run(*args, "--output", str(csv_out))
        assert result.returncode == 0, result.stderr
        assert csv_out.read_text().splitlines()[0].startswith("op,calls,")
    finally:
        down(cli)


def test_bad_mix_files_and_missing_bounds_exit_1(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "steady"\n[params]\nmax_live = -1\n')
    result = cli.run("load", "--mix", str(bad), "--ops", "10")
    assert result.returncode == 1
    assert f"{bad}:3: max_live: expected an integer >= 1" in result.stderr
    result = cli.run("load", "--mix", "default")
    assert result.returncode == 1
    assert "--ops" in result.stderr


async def _drained_buddyinfo(cli: Cli) -> list[list[int]]:
    addresses = cli.addresses()
    async with open_channel(addresses["zone"]) as z, open_channel(addresses["buddy"]) as b:
        await ZoneClient(z).drain()
        return [list(a.nr_free) for a in await BuddyClient(b).buddyinfo()]


def _state(cli: Cli) -> tuple[list[list[int]], list[str]]:
    dmesg = cli.run("dmesg")
    assert dmesg.returncode == 0, dmesg.stderr
    victims = re.findall(r"Killed process \d+ \(\S+\)", dmesg.stdout)
    return asyncio.run(_drained_buddyinfo(cli)), victims


def test_a_recorded_run_replays_to_the_same_machine_state(cli: Cli, tmp_path: Path) -> None:
    """Two fresh machines in a row (32 MiB, no swap, overcommit 1): a recorded
    run with one call in flight, then its replay; the same buddyinfo (per-CPU
    lists drained) and the same OOM victims."""
    mix = tmp_path / "oom.toml"
    mix.write_text(
        'name = "oom"\n'
        '[[workload]]\nuse = "leak"\nparams = { step = "2M" }\n'
        '[[workload]]\nuse = "steady"\n'
        '[[workload]]\nuse = "kernel_churn"\n'
    )
    trace = tmp_path / "trace.jsonl"
    states = []
    # Nothing of the machine's own may move pages between the calls: no
    # kswapd, no cache_reap on a timer (they run whenever the host lets them).
    quiet = cli.with_env(MEMSIM_KSWAPD="0", MEMSIM_SLAB_REAP_MS="0")
    for run in range(2):
        up(quiet, "--mem", "32M", "--swap", "0")
        try:
            sysctl = cli.run("sysctl", "-w", "vm.overcommit_memory=1")
            assert sysctl.returncode == 0, sysctl.stderr
            if run == 0:
                result = cli.run(
                    "load", "--mix", str(mix), "--processes", "3", "--ops", "300",
                    "--seed", "5", "--in-flight", "1", "--no-cleanup", "--record", str(trace),
                )  # fmt: skip
            else:
                result = cli.run(
                    "load", "--replay", str(trace), "--output", str(tmp_path / "r.json")
                )
            assert result.returncode == 0, result.stderr
            states.append(_state(cli))
        finally:
            down(cli)
    recorded = [json.loads(line) for line in trace.read_text().splitlines()[1:]]
    assert len(recorded) >= 300
    assert states[0][1], "the leak was never killed"
    assert states[0] == states[1]
    replayed = json.loads((tmp_path / "r.json").read_text())
    assert replayed["divergences"] == 0
    assert replayed["calls"] == len(recorded)
