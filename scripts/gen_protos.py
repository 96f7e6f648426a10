"""Generates Python code and type stubs from protos/ (make protos).

protos/memsim/<service>/v1/<service>.proto becomes the package
memsim.<service>.v1 under --out: messages (_pb2.py), gRPC stubs (_pb2_grpc.py)
and mypy-protobuf stubs (.pyi) for both. Old generated files are removed first
so a deleted .proto leaves nothing behind.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out: Path) -> list[Path]:
    protos = sorted(PROTOS.rglob("*.proto"))
    for old in out.glob("memsim/*/v1"):
        shutil.rmtree(old)
    bin_dir = Path(sys.executable).parent
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    packages = {out / p.relative_to(PROTOS).parent for p in protos}
    for package in packages:
        (package / "__init__.py").touch()
    return sorted(f for pkg in packages for f in pkg.iterdir() if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in generate(args.out):
        print(f"generated {path.relative_to(args.out)}")


if __name__ == "__main__":
    main()
