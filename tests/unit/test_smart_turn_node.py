"""SmartTurnNode's bookkeeping: which audio it judges and when (the model is a stand-in here;
tests/integration/test_smart_turn.py runs the real one)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import soxr

from remotemedia import Audio, Json, ModelNotFoundError
from remotemedia.nodes.audio.turn import SmartTurnNode, SmartTurnParams


class Recording:
    """Stands in for the ONNX session: records the features it is given."""

    def __init__(self, probability: float) -> None:
        self.probability = probability
        self.calls: list[np.ndarray] = []

    def run(self, _: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls.append(feeds["input_features"])
        return [np.array([[self.probability]], np.float32)]


def events(*items: tuple[str, float]) -> Json:
    return Json({"timestamp_ms": 0, "events": [{"kind": k, "ms": ms} for k, ms in items]})


async def test_it_judges_a_pause_once_and_the_end_that_confirms_it_not_again() -> None:
    node = SmartTurnNode("turn", SmartTurnParams(threshold=0.6))
    node._session = model = Recording(0.7)
    for _ in range(50):  # 1 s of 20 ms chunks
        await node.process(Audio(np.full(320, 0.1, np.float32), 16_000))
    assert await node.process(events(("start", 300.0))) == []
    (verdict,) = await node.process(events(("pause", 900.0)))
    assert verdict.value == {
        "turn_complete": True,
        "probability": 0.7,
        "at_ms": 900.0,
        "event": "pause",
    }
    assert await node.process(events(("end", 900.0))) == []
    assert len(model.calls) == 1
    assert model.calls[0].shape == (1, 80, 800)


async def test_an_end_with_no_pause_before_it_is_judged() -> None:
    node = SmartTurnNode("turn", SmartTurnParams())
    node._session = Recording(0.2)
    await node.process(Audio(np.full(16_000, 0.1, np.float32), 16_000))
    await node.process(events(("start", 100.0)))
    (verdict,) = await node.process(events(("end", 800.0)))
    assert verdict.value["turn_complete"] is False
    assert verdict.value["event"] == "end"


async def test_a_missing_model_file_names_itself_and_the_install_command() -> None:
    node = SmartTurnNode("turn", SmartTurnParams(model_path="/nonexistent/turn.onnx"))
    with pytest.raises(ModelNotFoundError, match=r"/nonexistent/turn.onnx does not exist"):
        await node.initialize()
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps 'pipecat-ai==1.14.0'"):
        await node.initialize()


async def test_audio_at_another_rate_is_resampled_as_one_stream() -> None:
    node = SmartTurnNode("turn", SmartTurnParams())
    node._session = model = Recording(0.9)
    tone = np.sin(2 * np.pi * 440 * np.arange(48_000) / 48_000).astype(np.float32) * 0.5
    for start in range(0, tone.size, 960):  # 20 ms chunks at 48 kHz
        await node.process(Audio(tone[start : start + 960], 48_000))
    await node.process(events(("start", 0.0)))
    await node.process(events(("pause", 1000.0)))
    (features,) = model.calls
    assert features.shape == (1, 80, 800)
    # What it keeps is the tone resampled as one stream (as soxr does it in one go),
    # not 50 chunks resampled apart, each with its own edges.
    kept = np.concatenate(node._chunks)
    whole = soxr.resample(tone, 48_000, 16_000)
    inside = slice(200, kept.size - 200)
    np.testing.assert_allclose(kept[inside], whole[inside], atol=1e-4)
