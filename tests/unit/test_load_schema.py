"""Workload and mix files: the shipped ones load, and every kind of mistake
is an error that names the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from memsim.clients.load.schema import (
    KINDS,
    Burst,
    LoadFileError,
    key_line,
    load_mix,
    load_workload,
    shipped,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(spec: Path) -> LoadFileError:
    with pytest.raises(LoadFileError) as info:
        load_mix(spec)
    return info.value


def test_every_shipped_workload_and_mix_loads() -> None:
    workloads = shipped("workloads")
    assert set(KINDS) <= {load_workload(n).kind for n in workloads}
    for name in workloads:
        workload = load_workload(name)
        assert set(workload.params) == set(KINDS[workload.kind])
    for name in shipped("mixes"):
        mix = load_mix(name)
        assert mix.entries
    default = load_mix("default")
    assert {e.workload.kind for e in default.entries} == set(KINDS)
    assert load_workload("bursty").burst == Burst(0.5, 25)


def test_a_mix_override_and_a_workload_given_as_a_mix(tmp_path: Path) -> None:
    pressure = load_mix("pressure")
    hog = next(e.workload for e in pressure.entries if e.workload.kind == "hog")
    assert hog.params["region"] == 32 << 20
    assert hog.params["rounds"] == 0  # the rest from the workload file
    single = load_mix("leak")
    assert [e.workload.kind for e in single.entries] == ["leak"]
    write(tmp_path, "mine.toml", 'kind = "hog"\n[params]\nregion = "2M"\n')
    mix = write(tmp_path, "mix.toml", '[[workload]]\nuse = "mine.toml"\nweight = 2\n')
    loaded = load_mix(mix)
    assert loaded.entries[0].workload.params["region"] == 2 << 20
    assert loaded.entries[0].weight == 2


def test_weights_share_the_processes_evenly() -> None:
    mix = load_mix("default")
    names = [w.name for w in mix.assign(13)]  # weights add up to 13
    for entry in mix.entries:
        assert names.count(entry.workload.name) == entry.weight
    assert mix.assign(4) == mix.assign(13)[:4]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('kind = "steady"\n[params]\nsizes = [1,\n', 3, "not valid TOML"),
        ('kind = "steady"\nname = "x"\nname = "y"\n', 3, "not valid TOML"),
        ('# a comment\n\nkind = "nope"\n', 3, "unknown kind 'nope'"),
        ('kind = "steady"\n\n[params]\nmax_live = 3\nsizez = [1]\n', 5, "unknown parameter"),
        ('kind = "steady"\n[params]\nmax_live = "many"\n', 3, "max_live: expected an integer"),
        ('kind = "steady"\n[params]\nmax_live = 0\n', 3, "max_live: expected an integer >= 1"),
        ('kind = "leak"\n[params]\nstep = "12Q"\n', 3, "is not a size"),
        ('kind = "steady"\n[params]\nsizes = []\n', 3, "non-empty list"),
        ('kind = "steady"\n[params]\nfree_ratio = 1.5\n', 3, "between 0 and 1"),
        ('kind = "steady"\n[params]\nwrite = 1\n', 3, "true or false"),
        ('kind = "fragmenter"\n[params]\nmode = "both"\n', 3, "mode: expected one of"),
        ('kind = "steady"\n[burst]\nidle_s = 1\nops = 0\n', 4, "ops: expected"),
        ('kind = "steady"\n[burst]\nidle_s = 1\n', 2, "burst needs ops"),
        ('kind = "steady"\ncolour = "red"\n', 2, "unknown key 'colour'"),
        ('name = "no kind"\n', 1, "missing key 'kind'"),
    ],
)
def test_a_bad_workload_file_names_its_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = write(tmp_path, "w.toml", text)
    with pytest.raises(LoadFileError) as info:
        load_workload(path)
    assert info.value.line == line, str(info.value)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert words in str(info.value)


MIX_HEAD = 'name = "m"\n\n[[workload]]\nuse = "steady"\n\n'


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (MIX_HEAD + '[[workload]]\nuse = "nosuch"\n', 7, "no workload 'nosuch'"),
        (MIX_HEAD + '[[workload]]\nuse = "leak"\nweight = 0\n', 8, "weight: expected"),
        (MIX_HEAD + '[[workload]]\nuse = "leak"\nparams = { stepp = 1 }\n', 8, "unknown param"),
        (MIX_HEAD + '[[workload]]\nuse = "leak"\n[workload.params]\nstep = "x"\n', 9, "not a size"),
        (MIX_HEAD + "[[workload]]\nweight = 2\n", 6, "needs use"),
        (MIX_HEAD + '[[workload]]\nuse = "leak"\ncount = 2\n', 8, "unknown key 'count'"),
        ('name = "m"\nworkloads = 1\n', 2, "unknown key 'workloads'"),
        ('name = "m"\n', 1, "at least one [[workload]]"),
    ],
)
def test_a_bad_mix_file_names_its_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, "m.toml", text)
    error = error_of(path)
    assert error.line == line, str(error)
    assert str(error).startswith(f"{path}:{line}: ")
    assert words in str(error)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    error = error_of(tmp_path / "absent.toml")
    assert "absent.toml" in str(error)
    assert "no such mix or workload" in str(error)


def test_key_line_finds_keys_in_tables_and_arrays_of_tables() -> None:
    text = "a = 1\n[params]\nb = 2\n[[w]]\nc = 3\n[[w]]\nc = 4\n[w.params]\nd = 5\n"
    assert key_line(text, "", "a") == 1
    assert key_line(text, "params", "b") == 3
    assert key_line(text, "w", "c", 0) == 5
    assert key_line(text, "w", "c", 1) == 7
    assert key_line(text, "w.params", "d", 1) == 9
    assert key_line(text, "w", "", 1) == 6
    assert key_line(text, "params", "zzz") is None
