"""Node types for worker-process tests (importable by the worker child)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import trio

from remotemedia.media import Audio, Json, RuntimeData, Text
from remotemedia.nodes import Node, NoParams
from remotemedia.nodes.base import Emit
from remotemedia.params import param


@attrs.frozen
class BehaviourParams:
    fail_on: str = param("", doc="raise on this text")
    die_on: str = param("", doc="SIGKILL the worker on this text")
    hang_on: str = param("", doc="sleep forever on this text")
    hanging: str = param("", doc="file to create when it starts to hang")
    block_on: str = param("", doc="block the whole worker (deaf to its socket) on this text")
    ignore_sigterm: bool = param(False, doc="ignore SIGTERM")


class Misbehaving(Node[BehaviourParams]):
    """Echoes text; fails, dies, hangs or blocks on command."""

    node_type = "Misbehaving"
    Params = BehaviourParams

    async def initialize(self) -> None:
        if self.params.ignore_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    async def process(self, data: RuntimeData) -> Any:
        text = data.text if isinstance(data, Text) else ""
        if text and text == self.params.fail_on:
            raise RuntimeError(f"asked to fail on {text!r}")
        if text and text == self.params.die_on:
            os.kill(os.getpid(), signal.SIGKILL)
        if text and text == self.params.block_on:
            if self.params.hanging:
                Path(self.params.hanging).touch()  # noqa: ASYNC240 - blocking is the point
            time.sleep(3600)  # noqa: ASYNC251 - deliberately deaf to everything but SIGKILL
        if text and text == self.params.hang_on:
            if self.params.hanging:
                await trio.Path(self.params.hanging).touch()
            await trio.sleep_forever()
        return Text(f"{text}:{os.getpid()}")


class Splitter(Node[Any]):
    """Yields every word of a text as its own output (an async generator)."""

    node_type = "Splitter"

    async def process(self, data: RuntimeData) -> AsyncIterator[RuntimeData]:
        assert isinstance(data, Text)
        for word in data.text.split():
            yield Text(word + " ")


@attrs.frozen
class BadInitParams:
    reason: str = param("no model", doc="why initialise fails")


class BadInit(Node[BadInitParams]):
    node_type = "BadInitWorker"
    Params = BadInitParams

    async def initialize(self) -> None:
        raise FileNotFoundError(self.params.reason)

    def process(self, data: RuntimeData) -> RuntimeData:
        return data


class SlowLoader(Node[Any]):
    """Reports two progress steps while it "loads a model"."""

    node_type = "SlowLoader"

    async def initialize(self) -> None:
        await self.report_progress("loading weights")
        await self.report_progress("warming up")

    def process(self, data: RuntimeData) -> RuntimeData:
        return data


@attrs.frozen
class FlakyParams:
    marker: str = param("", doc="file whose presence makes initialize hang")
    payload: str = param("", doc="any text (to send large configs)")


class HangsAfterCrash(Node[FlakyParams]):
    """Dies on "die" after creating the marker file; later starts hang while loading."""

    node_type = "HangsAfterCrash"
    Params = FlakyParams

    async def initialize(self) -> None:
        if self.params.marker and await trio.Path(self.params.marker).exists():
            await trio.sleep_forever()

    def process(self, data: RuntimeData) -> RuntimeData:
        if isinstance(data, Text) and data.text == "die":
            with open(self.params.marker, "w"):
                pass
            os.kill(os.getpid(), signal.SIGKILL)
        return Text(f"{len(self.params.payload)}:{os.getpid()}")


class Hoarder(Node[Any]):
    """Keeps a view of every input's samples; at the flush returns them all, joined.

    Each input is answered with whether its samples were read in place (a view,
    owning no data) or copied out of shared memory.
    """

    node_type = "Hoarder"

    def __init__(self, node_id: str, params: Any) -> None:
        super().__init__(node_id, params)
        self.kept: list[Any] = []

    def process(self, data: RuntimeData) -> RuntimeData:
        assert isinstance(data, Audio)
        self.kept.append(data.samples[1:])  # a derived view keeps the memory in use
        return Json({"in_place": not data.samples.flags.owndata})

    def flush(self) -> list[RuntimeData]:
        return [Audio(np.concatenate(self.kept), 16_000)]


class InPlaceProbe(Node[Any]):
    """Answers each input with whether its samples were read in place; keeps nothing."""

    node_type = "InPlaceProbe"

    def process(self, data: RuntimeData) -> RuntimeData:
        assert isinstance(data, Audio)
        return Json({"in_place": not data.samples.flags.owndata, "sum": float(data.samples.sum())})


class EnvironmentProbe(Node[Any]):
    """Answers each input with two environment variables its worker started with."""

    node_type = "EnvironmentProbe"
    worker_environment: ClassVar[Mapping[str, str]] = {
        "REMOTEMEDIA_PROBE_DECLARED": "node",
        "REMOTEMEDIA_PROBE_OPERATOR": "node",
    }

    def process(self, data: RuntimeData) -> RuntimeData:
        names = ("REMOTEMEDIA_PROBE_DECLARED", "REMOTEMEDIA_PROBE_OPERATOR")
        return Json({name: os.environ.get(name) for name in names})


class Tally(Node[Any]):
    """Counts each input twice: once here, once from a thread (as Whisper counts)."""

    node_type = "Tally"

    async def process(self, data: RuntimeData) -> RuntimeData:
        self.count("seen")
        await trio.to_thread.run_sync(self.count, "in_a_thread", 2)
        return data


class SlowVoice(Node[Any]):
    """Answers "slow" with "early" at once and "late" a second later, from a thread (as a
    voice synthesises a long piece); any other text at once, with the worker's pid."""

    node_type = "SlowVoice"

    async def process(self, data: RuntimeData) -> AsyncIterator[RuntimeData]:
        assert isinstance(data, Text)
        if data.text == "slow":
            yield Text("early")
            await trio.to_thread.run_sync(time.sleep, 1.0)
            yield Text("late")
        else:
            self.count("spoke")
            yield Text(f"{data.text}:{os.getpid()}")


class Generator(Node[Any]):
    """For text "N", yields "0", "1", ... "N-1", one every 50 ms of work in a thread (as
    a model generates tokens); counts "stopped" when its work is cut short."""

    node_type = "Generator"

    async def process(self, data: RuntimeData) -> AsyncIterator[RuntimeData]:
        assert isinstance(data, Text)
        done = 0
        try:
            for index in range(int(data.text)):
                await trio.to_thread.run_sync(time.sleep, 0.05)
                yield Text(str(index))
                done += 1
        finally:
            if done < int(data.text):
                self.count("stopped")


class VoiceOwner(Node[Any]):
    """A duplex node that answers each text through a SlowVoice child it owns."""

    node_type = "VoiceOwner"

    def __init__(self, node_id: str, params: Any) -> None:
        super().__init__(node_id, params)
        self.voice: Node[Any] | None = None

    async def initialize(self) -> None:
        self.voice = self.make_child("voice", SlowVoice, NoParams())
        await self.voice.initialize()

    async def cleanup(self) -> None:
        if self.voice is not None:
            await self.voice.cleanup()

    async def run(self, inputs: AsyncIterator[RuntimeData], emit: Emit) -> None:
        assert self.voice is not None
        async for data in inputs:
            async for said in self.voice.process(data):  # type: ignore[union-attr]
                await emit(said)
            await emit(Json({"voice_pid": getattr(self.voice, "pid", None)}))
