"""Run every model node on CUDA (bfloat16) with tiny models, a line each: for a GPU machine.

    python3 scripts/gpu_check.py [--env-dir DIR] [--python 3.11 --requirement torch==2.8.0 ...]

Builds (or reuses) the model nodes' environments with the nodes' own declared
requirements (so torch is PyPI's CUDA build: several GB the first time; ``--python``
and ``--requirement`` replace those of the transformers nodes), builds tiny
random models in them, and runs each node in a worker process with ``device: cuda``
and ``dtype: bfloat16``. Prints ``ok`` with the first output's latency, or why not.
Exits 1 if any node failed, 2 if torch sees no CUDA device (nothing to check here).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio

from remotemedia.environments import Environment
from remotemedia.environments.cache import Environments, default_env_dir
from remotemedia.executors.process import (
    ProcessNode,
    WorkerSettings,
    default_namespace,
    new_session_id,
)
from remotemedia.media import Audio, RuntimeData, Text
from remotemedia.nodes import Node

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "models"
sys.path.insert(0, str(ROOT))  # the tests' scripted VibeVoice; workers start in ROOT too

Case = Callable[[Path], tuple[type[Node[Any]], Any, RuntimeData, str, list[str]]]
"""From the tiny models' folder: node class, params, an input, the tiny model kind, and
the script that builds it (``make_tiny.py KIND``, or another)."""


def cases(device: str = "cuda") -> dict[str, Case]:
    """Every model node with a tiny model, on ``device`` (CUDA: in bfloat16)."""
    from tests.models.vibevoice_scripted import ScriptedVibeVoiceNode, ScriptedVibeVoiceParams

    from remotemedia.nodes.lfm2_audio import LFM2AudioNode, LFM2AudioParams
    from remotemedia.nodes.transformers import (
        LFM2TextNode,
        LFM2TextParams,
        TransformersPipelineNode,
        TransformersPipelineParams,
    )

    gpu = {"device": device, "dtype": "bfloat16" if device.startswith("cuda") else "float32"}
    noise = np.random.default_rng(0).standard_normal(16_000).astype(np.float32)
    speech = Audio.adopt(0.1 * noise, 16_000)
    found: dict[str, Case] = {
        "TransformersPipelineNode (text-generation, tiny LFM2)": lambda root: (
            TransformersPipelineNode,
            TransformersPipelineParams(
                task="text-generation",
                model=str(root / "lfm2"),
                pipeline_kwargs={"max_new_tokens": 8},
                **gpu,
            ),
            Text("hello"),
            "lfm2",
            [str(MODELS / "make_tiny.py"), "lfm2"],
        ),
        "TransformersPipelineNode (automatic-speech-recognition, tiny Whisper)": lambda root: (
            TransformersPipelineNode,
            TransformersPipelineParams(
                task="automatic-speech-recognition", model=str(root / "whisper"), **gpu
            ),
            speech,
            "whisper",
            [str(MODELS / "make_tiny.py"), "whisper"],
        ),
        "LFM2TextNode (tiny LFM2)": lambda root: (
            LFM2TextNode,
            LFM2TextParams(model=str(root / "lfm2"), max_new_tokens=8, **gpu),
            Text("hello"),
            "lfm2",
            [str(MODELS / "make_tiny.py"), "lfm2"],
        ),
        # The tests' VibeVoice, made to speak: a random model never does by itself.
        "VibeVoiceNode (tiny VibeVoice)": lambda root: (
            ScriptedVibeVoiceNode,
            ScriptedVibeVoiceParams(model=str(root / "vibevoice"), seed=1, **gpu),
            Text("Hello there."),
            "vibevoice",
            [str(MODELS / "make_tiny_vibevoice.py")],
        ),
        "LFM2AudioNode (tts, tiny LFM2-Audio with Mimi)": lambda root: (
            LFM2AudioNode,
            LFM2AudioParams(model=str(root / "lfm2-audio"), mode="tts", max_new_tokens=20, **gpu),
            Text("Hello there."),
            "lfm2-audio",
            [str(MODELS / "make_tiny_lfm2_audio.py"), "mimi"],
        ),
    }
    return found


async def first_output(node: ProcessNode, data: RuntimeData) -> float:
    """Start the node's worker and time its first output to ``data`` (seconds)."""
    await node.initialize()
    started = time.perf_counter()
    async with contextlib.aclosing(node.process(data)) as outputs:
        async for _ in outputs:
            return time.perf_counter() - started
    raise RuntimeError("the node gave no output")


async def check(
    name: str, case: Case, cache: Environments, root: Path, override: Environment | None
) -> bool:
    node_class, params, data, kind, make = case(root)
    environment = node_class.environment or Environment()
    if override is not None and environment.python is None:  # the transformers nodes'
        environment = override
    try:
        python = await cache.ensure(environment)
        if not (root / kind).exists():
            await trio.run_process(
                [str(python), *make, str(root / kind)], capture_stdout=True, capture_stderr=True
            )
        node = ProcessNode(
            "gpu",
            params,
            node_class=node_class,
            raw_params=attrs.asdict(params),
            session_id=new_session_id(),
            settings=WorkerSettings(default_namespace(), environments=cache),
            environment=environment,
        )
        try:
            seconds = await first_output(node, data)
        finally:
            with trio.CancelScope(shield=True):
                await node.cleanup()
    except Exception as exc:
        print(f"FAILED  {name}: {exc}", flush=True)
        return False
    print(f"ok      {name}: first output in {seconds * 1e3:.0f} ms", flush=True)
    return True


def cuda_available(python: Path) -> bool:
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([str(python), "-c", probe], check=False).returncode == 0


async def main(env_dir: Path, override: Environment | None, device: str) -> int:
    os.chdir(ROOT)  # workers import the tests' scripted VibeVoice from here
    cache = Environments(env_dir)
    found = cases(device)
    first = override or next(iter(found.values()))(Path())[0].environment or Environment()
    print(f"building (or finding) {first.describe()} in {env_dir}", flush=True)
    python = await cache.ensure(first)
    if device.startswith("cuda") and not cuda_available(python):
        print("torch sees no CUDA device here: nothing to check on this machine.")
        return 2
    with tempfile.TemporaryDirectory() as folder:
        results = [
            await check(name, case, cache, Path(folder), override) for name, case in found.items()
        ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-dir", type=Path, default=default_env_dir())
    parser.add_argument("--python", help="the transformers nodes' Python (e.g. 3.11)")
    parser.add_argument("--requirement", action="append", help="their requirements (repeat)")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of this script")
    args = parser.parse_args()
    if importlib.util.find_spec("remotemedia") is None:
        raise SystemExit("install remotemedia first: python3 scripts/tasks.py install")
    override = None
    if args.python or args.requirement:
        override = Environment(args.python, tuple(args.requirement or ()))
    sys.exit(trio.run(main, args.env_dir, override, args.device))
