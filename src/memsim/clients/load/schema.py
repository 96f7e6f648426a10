"""Workload and mix files: their schema, and a loader whose errors name the line.

A workload file (TOML) describes what one simulated process does:

    name = "steady"            # optional; defaults to the file's stem
    kind = "steady"            # steady, leak, fork_server, hog, kernel_churn,
                               # fragmenter, shm_db
    description = "..."        # optional

    [params]                   # optional: the kind's parameters (see KINDS);
    sizes = ["32", "1K", "200K"]  # sizes are bytes or strings such as "64K"

    [burst]                    # optional modifier: idle, then a burst of calls
    idle_s = 0.5               # seconds without a call
    ops = 20                   # calls in each burst

A mix file names workloads with weights; processes are given workloads in
proportion to the weights (smooth weighted round-robin, so that any prefix of
the processes is as close to the proportions as it can be):

    name = "default"
    description = "..."
    [[workload]]
    use = "steady"             # a shipped workload, or a path to a workload
    weight = 3                 #   file (relative to the mix file's folder)
    [[workload]]
    use = "leak"
    weight = 1
    params = { step = "256K" } # optional: overrides of the workload's params

Every mistake is a LoadFileError whose message starts "FILE:LINE:".
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from memsim.profiles.sizes import parse_size

ParamValue = int | float | bool | str | tuple[int, ...]


class LoadFileError(ValueError):
    """A workload or mix file that cannot be used; the message names file and line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.message = message


# -- the kinds and their parameters ------------------------------------------------------

SIZE = "size"  # bytes: an integer or a string such as "64K"
SIZES = "sizes"  # a non-empty list of sizes
INT = "int"  # an integer >= 0
POS = "pos"  # an integer >= 1
FRACTION = "fraction"  # a number in [0, 1]
BOOL = "bool"
STR = "str"


@dataclass(frozen=True)
class Param:
    type: str
    default: ParamValue
    help: str


KINDS: dict[str, dict[str, Param]] = {
    "steady": {
        "sizes": Param(SIZES, (32, 128, 1024, 4096, 16384, 200 << 10), "malloc sizes, uniform"),
        "max_live": Param(POS, 64, "blocks held at most; past it every call is a free"),
        "free_ratio": Param(FRACTION, 0.45, "chance that a call frees a block"),
        "write": Param(BOOL, True, "write the first bytes of each new block"),
    },
    "leak": {
        "step": Param(SIZE, 256 << 10, "bytes malloc'ed (and written) each call, never freed"),
        "give_up_after": Param(POS, 20, "ENOMEM refusals in a row before exiting to start again"),
    },
    "fork_server": {
        "region": Param(SIZE, 1 << 20, "private memory the server writes before forking"),
        "children": Param(POS, 4, "children alive at most"),
        "child_writes": Param(POS, 4, "pages a child writes (copy-on-write) per call"),
        "exit_ratio": Param(FRACTION, 0.25, "chance that a call ends a child"),
    },
    "hog": {
        "region": Param(SIZE, 16 << 20, "bytes mapped and touched"),
        "chunk": Param(SIZE, 1 << 20, "bytes touched per call"),
        "rounds": Param(INT, 0, "re-touch rounds before unmapping and mapping again (0: never)"),
    },
    "kernel_churn": {
        "kmalloc_sizes": Param(SIZES, (32, 96, 192, 512, 2048, 8192), "kmalloc sizes, uniform"),
        "object_size": Param(SIZE, 200, "object size of the cache the workload creates"),
        "batch": Param(POS, 8, "objects per kmalloc or cache_alloc call"),
        "max_live": Param(POS, 32, "batches held at most"),
        "free_ratio": Param(FRACTION, 0.45, "chance that a call frees a batch"),
    },
    "fragmenter": {
        "pin": Param(SIZE, 4 << 20, "bytes mapped and touched; then every other page unmapped"),
        "high_sizes": Param(
            SIZES, (32 << 10, 64 << 10, 128 << 10), "high-order requests after the pinning"
        ),
        "max_live": Param(POS, 16, "high-order blocks held at most"),
        "free_ratio": Param(FRACTION, 0.4, "chance that a call frees a block"),
        "mode": Param(STR, "auto", "auto, kmalloc (MMU machines) or mmap (no-MMU machines)"),
    },
    "shm_db": {
        "region": Param(SIZE, 4 << 20, "MAP_SHARED bytes the database maps and fills"),
        "workers": Param(INT, 2, "forked workers sharing the region"),
        "hot_fraction": Param(FRACTION, 0.1, "share of the pages in the hot set"),
        "hot_ratio": Param(FRACTION, 0.9, "chance that an access goes to the hot set"),
        "write_ratio": Param(FRACTION, 0.3, "chance that an access writes"),
    },
}

FRAGMENTER_MODES = ("auto", "kmalloc", "mmap")
BURST_KEYS = {"idle_s", "ops"}
WORKLOAD_KEYS = {"name", "kind", "description", "params", "burst"}
MIX_KEYS = {"name", "description", "workload"}
MIX_ENTRY_KEYS = {"use", "weight", "params", "burst"}


@dataclass(frozen=True)
class Burst:
    idle_s: float
    ops: int


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str
    params: dict[str, ParamValue]
    burst: Burst | None = None
    description: str = ""
    source: str = ""


@dataclass(frozen=True)
class MixEntry:
    workload: Workload
    weight: int


@dataclass(frozen=True)
class Mix:
    name: str
    entries: tuple[MixEntry, ...]
    description: str = ""
    source: str = ""

    def assign(self, processes: int) -> list[Workload]:
        """The workload of each process index: smooth weighted round-robin."""
        current = [0] * len(self.entries)
        total = sum(e.weight for e in self.entries)
        chosen: list[Workload] = []
        for _ in range(processes):
            for i, e in enumerate(self.entries):
                current[i] += e.weight
            best = max(range(len(current)), key=lambda i: (current[i], -i))
            current[best] -= total
            chosen.append(self.entries[best].workload)
        return chosen


@dataclass
class _Source:
    """A parsed file and its text, to find the line of a key."""

    path: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def error(self, message: str, table: str = "", key: str = "", index: int = 0) -> LoadFileError:
        return LoadFileError(self.path, key_line(self.text, table, key, index), message)


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")


def key_line(text: str, table: str = "", key: str = "", index: int = 0) -> int | None:
    """The 1-based line where `key` is set in `table` ("" is the top level,
    "workload.params" the params of the index-th [[workload]]), or of the
    table's header when key is empty; None when not found. A key in an inline
    table (`params = { a = 1 }`) is found on the inline table's line."""
    arrays: dict[str, int] = {}
    current: tuple[str, int] = ("", 0)
    target = (table, index)
    parent, _, last = table.rpartition(".")
    key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    inline_re = re.compile(rf"^\s*{re.escape(last)}\s*=.*[{{,]\s*{re.escape(key)}\s*=")
    for number, line in enumerate(text.splitlines(), 1):
        match = _HEADER.match(line)
        if match:
            name = re.sub(r"[\"'\s]", "", match.group(2))
            root = name.split(".")[0]
            if match.group(1) == "[[":
                arrays[name] = arrays.get(name, -1) + 1
                current = (name, arrays[name])
            else:
                current = (name, arrays.get(root, 0))
            if current == target and not key:
                return number
            continue
        if not key:
            continue
        if current == target and key_re.match(line):
            return number
        if parent is not None and current == (parent, index) and inline_re.match(line):
            return number
    return None


def _load_toml(path: Path, display: str) -> _Source:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LoadFileError(display, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        message = getattr(exc, "msg", None) or str(exc)
        if line is None:
            found = re.search(r"line (\d+)", str(exc))
            # "at end of document": the last line, where the unfinished value is.
            line = int(found.group(1)) if found else max(1, len(text.splitlines()))
            message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise LoadFileError(display, line, f"not valid TOML: {message}") from None
    return _Source(display, text, data)


# -- values -------------------------------------------------------------------------------


def _convert(
    src: _Source, table: str, key: str, value: object, spec: Param, index: int = 0
) -> ParamValue:
    def bad(expected: str) -> LoadFileError:
        return src.error(f"{key}: expected {expected}, got {value!r}", table, key, index)

    if spec.type == SIZE:
        return _size(src, table, key, value, index)
    if spec.type == SIZES:
        if not isinstance(value, list) or not value:
            raise bad('a non-empty list of sizes such as [64, "4K"]')
        return tuple(_size(src, table, key, v, index) for v in value)
    if spec.type in (INT, POS):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        low = 1 if spec.type == POS else 0
        if value < low:
            raise bad(f"an integer >= {low}")
        return value
    if spec.type == FRACTION:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise bad("a number between 0 and 1")
        return float(value)
    if spec.type == BOOL:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if not isinstance(value, str):
        raise bad("a string")
    return value


def _size(src: _Source, table: str, key: str, value: object, index: int) -> int:
    if isinstance(value, bool):
        value = None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str):
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise src.error(f"{key}: {exc}", table, key, index) from None
        if size > 0:
            return size
    raise src.error(
        f'{key}: expected a size such as 4096 or "64K" (more than 0), got {value!r}',
        table,
        key,
        index,
    )


def _params(
    src: _Source,
    kind: str,
    raw: object,
    table: str,
    base: dict[str, ParamValue] | None = None,
    index: int = 0,
    owner_key: str = "params",
) -> dict[str, ParamValue]:
    specs = KINDS[kind]
    params = dict(base) if base is not None else {k: p.default for k, p in specs.items()}
    if raw is None:
        return params
    if not isinstance(raw, dict):
        parent = table.rpartition(".")[0]
        raise src.error(f"{owner_key} must be a table", parent, owner_key, index)
    for key, value in raw.items():
        if key not in specs:
            known = ", ".join(sorted(specs))
            raise src.error(
                f"unknown parameter {key!r} for kind {kind!r} (known: {known})", table, key, index
            )
        params[key] = _convert(src, table, key, value, specs[key], index)
    if kind == "fragmenter" and params["mode"] not in FRAGMENTER_MODES:
        raise src.error(
            f"mode: expected one of {', '.join(FRAGMENTER_MODES)}, got {params['mode']!r}",
            table,
            "mode",
            index,
        )
    return params


def _burst(src: _Source, raw: object, table: str, index: int = 0) -> Burst | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        parent = table.rpartition(".")[0]
        raise src.error("burst must be a table with idle_s and ops", parent, "burst", index)
    for key in raw:
        if key not in BURST_KEYS:
            raise src.error(f"unknown key {key!r} in burst (known: idle_s, ops)", table, key, index)
    for key in sorted(BURST_KEYS):
        if key not in raw:
            raise src.error(f"burst needs {key}", table, "", index)
    idle = raw["idle_s"]
    if isinstance(idle, bool) or not isinstance(idle, int | float) or idle < 0:
        raise src.error(f"idle_s: expected seconds >= 0, got {idle!r}", table, "idle_s", index)
    ops = raw["ops"]
    if isinstance(ops, bool) or not isinstance(ops, int) or ops < 1:
        raise src.error(f"ops: expected an integer >= 1, got {ops!r}", table, "ops", index)
    return Burst(float(idle), ops)


def _string(src: _Source, data: dict[str, Any], key: str, table: str = "", index: int = 0) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise src.error(f"{key}: expected a string, got {value!r}", table, key, index)
    return value


# -- workloads ----------------------------------------------------------------------------


def shipped(folder: str) -> dict[str, Path]:
    """The files shipped in the package's workloads/ or mixes/, by stem."""
    root = resources.files("memsim.clients.load").joinpath(folder)
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in root.iterdir()
        if entry.name.endswith(".toml")
    }


def _resolve(spec: str, folder: str, relative_to: Path | None = None) -> Path | None:
    """A shipped name, or a path (relative to `relative_to` first)."""
    if not spec.endswith(".toml") and "/" not in spec:
        found = shipped(folder).get(spec)
        if found is not None:
            return found
    candidates = [Path(spec)]
    if relative_to is not None and not Path(spec).is_absolute():
        candidates.insert(0, relative_to / spec)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def load_workload(spec: str | Path) -> Workload:
    """A workload by shipped name or by path."""
    path = _resolve(str(spec), "workloads")
    if path is None:
        names = ", ".join(sorted(shipped("workloads")))
        raise LoadFileError(str(spec), None, f"no such workload file (shipped: {names})")
    return _parse_workload(_load_toml(path, str(spec) if "/" in str(spec) else str(path)))


def _parse_workload(src: _Source) -> Workload:
    data = src.data
    for key in data:
        if key not in WORKLOAD_KEYS:
            known = ", ".join(sorted(WORKLOAD_KEYS))
            raise src.error(f"unknown key {key!r} (known: {known})", "", key)
    if "kind" not in data:
        raise LoadFileError(src.path, 1, f"missing key 'kind' (one of {', '.join(KINDS)})")
    kind = data["kind"]
    if kind not in KINDS:
        raise src.error(f"kind: unknown kind {kind!r} (one of {', '.join(KINDS)})", "", "kind")
    name = _string(src, data, "name") or Path(src.path).stem
    return Workload(
        name=name,
        kind=kind,
        params=_params(src, kind, data.get("params"), "params"),
        burst=_burst(src, data.get("burst"), "burst"),
        description=_string(src, data, "description"),
        source=src.path,
    )


# -- mixes --------------------------------------------------------------------------------


def load_mix(spec: str | Path) -> Mix:
    """A mix by shipped name or by path; a workload file given here is a mix of one."""
    path = _resolve(str(spec), "mixes") or _resolve(str(spec), "workloads")
    if path is None:
        mixes = ", ".join(sorted(shipped("mixes")))
        workloads = ", ".join(sorted(shipped("workloads")))
        raise LoadFileError(
            str(spec),
            None,
            f"no such mix or workload (shipped mixes: {mixes}; workloads: "
            f"{workloads}; or a path to a .toml file)",
        )
    src = _load_toml(path, str(spec) if "/" in str(spec) else str(path))
    if "kind" in src.data and "workload" not in src.data:
        workload = _parse_workload(src)
        return Mix(workload.name, (MixEntry(workload, 1),), workload.description, src.path)
    return _parse_mix(src, path.parent)


def _parse_mix(src: _Source, folder: Path) -> Mix:
    data = src.data
    for key in data:
        if key not in MIX_KEYS:
            raise src.error(f"unknown key {key!r} (known: {', '.join(sorted(MIX_KEYS))})", "", key)
    entries_raw = data.get("workload")
    if not isinstance(entries_raw, list) or not entries_raw:
        raise LoadFileError(
            src.path,
            key_line(src.text, "", "workload") or 1,
            "a mix needs at least one [[workload]] table",
        )
    entries: list[MixEntry] = []
    for index, raw in enumerate(entries_raw):
        table = "workload"
        if not isinstance(raw, dict):
            raise src.error("workload must be an array of tables", "", "workload")
        for key in raw:
            if key not in MIX_ENTRY_KEYS:
                known = ", ".join(sorted(MIX_ENTRY_KEYS))
                raise src.error(f"unknown key {key!r} (known: {known})", table, key, index)
        use = raw.get("use")
        if not isinstance(use, str) or not use:
            raise src.error(
                'each [[workload]] needs use = "NAME" or a path',
                table,
                "use" if use else "",
                index,
            )
        weight = raw.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise src.error(
                f"weight: expected an integer >= 1, got {weight!r}", table, "weight", index
            )
        path = _resolve(use, "workloads", folder)
        if path is None:
            names = ", ".join(sorted(shipped("workloads")))
            raise src.error(
                f"use: no workload {use!r} (shipped: {names}; or a path to a .toml file)",
                table,
                "use",
                index,
            )
        base = _parse_workload(_load_toml(path, str(path)))
        workload = base
        if "params" in raw or "burst" in raw:
            workload = Workload(
                name=base.name,
                kind=base.kind,
                params=_params(
                    src, base.kind, raw.get("params"), f"{table}.params", base.params, index
                ),
                burst=_burst(src, raw.get("burst"), f"{table}.burst", index)
                if "burst" in raw
                else base.burst,
                description=base.description,
                source=base.source,
            )
        entries.append(MixEntry(workload, weight))
    name = _string(src, data, "name") or Path(src.path).stem
    return Mix(name, tuple(entries), _string(src, data, "description"), src.path)
