"""Generate the Python stubs of the remotemedia.v1 protos into src/remotemedia/v1/.

    python3 scripts/gen_proto.py           # regenerate (commit the result)
    python3 scripts/gen_proto.py --check   # exit 1 if the committed stubs differ (run by lint)

Uses protoc from grpcio-tools and grpclib's protoc plugin, both dev dependencies. The
stubs are committed so that installing the package needs neither.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
PACKAGE = ROOT / "src" / "remotemedia" / "v1"
HEADER = '"""Generated from proto/remotemedia/v1 by scripts/gen_proto.py; do not edit."""\n'


def generate(out: Path) -> None:
    protos = sorted(
        str(p.relative_to(PROTO)) for p in (PROTO / "remotemedia" / "v1").glob("*.proto")
    )
    # Run grpclib's plugin through this interpreter: its console script is not
    # always beside it (pip --user installs, some venvs).
    plugin = out / "protoc-gen-grpclib_python"
    plugin.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -c '
        '"import sys; from grpclib.plugin.main import main; sys.exit(main())"\n'
    )
    plugin.chmod(0o755)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"--plugin=protoc-gen-grpclib_python={plugin}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpclib_python_out={out}",
        *protos,
    ]
    subprocess.run(command, check=True, cwd=PROTO)
    (out / "remotemedia" / "v1" / "__init__.py").write_text(HEADER)
    plugin.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh = out / "remotemedia" / "v1"
        if args.check:
            names = sorted(p.name for p in fresh.iterdir())
            committed = sorted(p.name for p in PACKAGE.glob("*") if p.is_file())
            _, mismatch, errors = filecmp.cmpfiles(fresh, PACKAGE, names, shallow=False)
            if mismatch or errors or names != committed:
                print(
                    "The generated stubs in src/remotemedia/v1 do not match proto/; "
                    "run `python3 scripts/gen_proto.py` and commit the result.",
                    file=sys.stderr,
                )
                sys.exit(1)
            print("proto stubs are up to date")
            return
        if PACKAGE.exists():
            shutil.rmtree(PACKAGE)
        shutil.copytree(fresh, PACKAGE)
        print(f"wrote {PACKAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
