"""The code generated from protos/ is what a fresh generation gives, byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generated(tree: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(tree)): p.read_bytes()
        for p in sorted(tree.glob("memsim/*/v1/*"))
        if p.is_file()
    }


def test_generated_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh = _generated(tmp_path)
    current = _generated(ROOT / "src")
    assert fresh, "the generator produced nothing"
    assert sorted(current) == sorted(fresh), "run `make protos`: files differ"
    stale = [name for name in fresh if current[name] != fresh[name]]
    assert not stale, f"run `make protos`: stale generated files {stale}"


def test_every_proto_has_its_messages_stubs_and_type_stubs() -> None:
    for proto in sorted((ROOT / "protos").rglob("*.proto")):
        package = ROOT / "src" / proto.relative_to(ROOT / "protos").parent
        stem = proto.stem
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
            assert (package / f"{stem}{suffix}").is_file(), f"{stem}{suffix} missing"
