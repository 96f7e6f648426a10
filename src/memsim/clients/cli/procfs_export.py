"""`memsim procfs export DIR`: the simulated machine's /proc files, written
into DIR in the kernel's formats so that node_exporter started with
--path.procfs=DIR serves them (its meminfo, vmstat, buddyinfo, zoneinfo and
slabinfo collectors) as it serves a real host's.

Each file is written whole and renamed into place, so a reader never sees
half a file.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from memsim.clients.cli.procfiles import PROC_FILES, Clients

# What node_exporter's memory collectors read, under DIR as under /proc.
EXPORTED = ("meminfo", "buddyinfo", "zoneinfo", "vmstat", "slabinfo", "vmallocinfo")


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def export(clients: Clients, directory: Path) -> list[str]:
    """Reads every file first and then writes them, so that one export is
    one moment of the machine as far as the services allow; the names written."""
    texts = {name: await PROC_FILES[f"/proc/{name}"](clients) for name in EXPORTED}
    await asyncio.to_thread(write_all, directory, texts)
    return list(texts)


def write_all(directory: Path, texts: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        write_atomically(directory / name, text)
