"""The WebRTC edge's media rules, without a peer (sans-IO)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from remotemedia.errors import InvalidRequestError
from remotemedia.transport.webrtc_media import (
    FRAME_SAMPLES,
    RATE,
    Inbound,
    Outbound,
    Playout,
    Sequencer,
)
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import streaming_pb2 as spb


def _result(**outputs: pb.DataBuffer) -> bytes:
    result = spb.ChunkResult(sequence=3, data_outputs=outputs)
    return spb.StreamResponse(result=result).SerializeToString()


def _audio(
    seconds: float, rate: int, turn: str | None = None, value: float = 0.25
) -> pb.DataBuffer:
    samples = np.full(round(seconds * rate), value, np.float32)
    audio = pb.AudioBuffer(
        samples=samples.tobytes(),
        sample_rate=rate,
        channels=1,
        format=pb.AUDIO_FORMAT_F32,
        num_samples=samples.size,
    )
    if turn is not None:
        audio.metadata_json = json.dumps({"turn": turn}).encode()
    return pb.DataBuffer(audio=audio)


def _json(value: object) -> pb.DataBuffer:
    return pb.DataBuffer(json=pb.JsonData(json_payload=json.dumps(value)))


def test_track_frames_and_channel_chunks_share_one_count() -> None:
    sequencer = Sequencer()
    assert [sequencer.take(), sequencer.take()] == [0, 1]
    assert sequencer.take(own=0) == 2  # behind the count: renumbered
    assert sequencer.take(own=10) == 10  # ahead: kept
    assert sequencer.take() == 11


def test_a_stereo_frame_becomes_one_mono_float_chunk() -> None:
    inbound = Inbound()
    left = np.full(FRAME_SAMPLES, 16384, np.int16)
    right = np.zeros(FRAME_SAMPLES, np.int16)
    interleaved = np.stack((left, right), axis=1).reshape(-1)
    data = inbound.frame(interleaved, channels=2, waiting=0)
    assert data is not None
    chunk = spb.StreamRequest.FromString(data).data_chunk
    samples = np.frombuffer(chunk.buffer.audio.samples, "<f4")
    assert chunk.sequence == 0
    assert chunk.buffer.audio.sample_rate == RATE
    assert chunk.buffer.audio.channels == 1
    assert samples.shape == (FRAME_SAMPLES,)
    np.testing.assert_allclose(samples, 0.25)


def test_frames_beyond_the_bound_are_dropped_and_counted() -> None:
    inbound = Inbound(max_frames=2)
    frame = np.zeros(FRAME_SAMPLES, np.int16)
    assert inbound.frame(frame, 1, waiting=1) is not None
    assert inbound.frame(frame, 1, waiting=2) is None
    assert inbound.dropped == 1
    kept = inbound.frame(frame, 1, waiting=0)
    assert kept is not None
    assert spb.StreamRequest.FromString(kept).data_chunk.sequence == 1  # no gap for a drop


def test_a_channel_chunk_behind_the_count_is_renumbered() -> None:
    inbound = Inbound()
    inbound.frame(np.zeros(FRAME_SAMPLES, np.int16), 1, waiting=0)
    text = spb.DataChunk(buffer=pb.DataBuffer(text=pb.TextBuffer(text_data=b"hi")), sequence=0)
    data = spb.StreamRequest(data_chunk=text).SerializeToString()
    renumbered = spb.StreamRequest.FromString(inbound.message(data))
    assert renumbered.data_chunk.sequence == 1
    assert renumbered.data_chunk.buffer.text.text_data == b"hi"
    control = spb.StreamRequest(control=spb.StreamControl(command=1)).SerializeToString()
    assert inbound.message(control) is control


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\xff\xff\xff", "not a serialized StreamRequest"),
        (spb.StreamRequest(init=spb.StreamInit()).SerializeToString(), "comes with its offer"),
    ],
)
def test_a_bad_channel_message_is_refused_by_name(data: bytes, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        Inbound().message(data)


def test_playout_resamples_to_whole_frames_and_pads_the_last() -> None:
    playout = Playout()
    playout.push(np.full(22050, 0.5, np.float32), 22050, turn="t1")  # 1 s at 22.05 kHz
    frames = []
    while (frame := playout.pop()) is not None:
        frames.append(frame)
    assert all(frame.dtype == np.int16 and frame.size == FRAME_SAMPLES for frame in frames)
    # One second, less what the resampler still holds, plus the padded last frame.
    assert 45 <= len(frames) <= 50
    middle = np.concatenate(frames[5:-5])
    assert np.all(np.abs(middle.astype(np.int32) - 16384) < 400)
    assert playout.sent["t1"] == len(frames)


def test_a_cut_drops_the_queue_and_says_what_was_sent_of_the_turn() -> None:
    playout = Playout()
    playout.push(np.zeros(RATE, np.float32), RATE, turn="t1")
    for _ in range(7):
        playout.pop()
    assert playout.queued == 50 - 7
    assert playout.cut("t1") == 7 * 20
    assert playout.queued == 0
    assert playout.pop() is None
    assert playout.cut("t2") == 0


def test_playout_is_full_at_its_capacity() -> None:
    playout = Playout(capacity_s=0.1)
    playout.push(np.zeros(FRAME_SAMPLES * 4, np.float32), RATE, None)
    assert not playout.full
    playout.push(np.zeros(FRAME_SAMPLES, np.float32), RATE, None)
    assert playout.full


def test_audio_goes_to_the_track_and_the_rest_to_the_channel() -> None:
    inbound = Inbound()
    outbound = Outbound(Playout(), inbound)
    assert outbound.take(_result(piper=_audio(0.1, RATE))) is None
    assert outbound.playout.queued == 5
    mixed = outbound.take(_result(piper=_audio(0.1, RATE), whisper=_json({"text": "hi"})))
    assert mixed is not None
    outputs = spb.StreamResponse.FromString(mixed).result.data_outputs
    assert list(outputs) == ["whisper"]
    ready = spb.StreamResponse(ready=spb.StreamReady(session_id="s")).SerializeToString()
    assert outbound.take(ready) is ready
    plain = _result(whisper=_json({"text": "hi"}))
    assert outbound.take(plain) is plain


def test_an_interruption_cuts_the_track_first_and_reports_what_was_sent() -> None:
    outbound = Outbound(Playout(), Inbound())
    outbound.take(_result(coordinator=_audio(1.0, 22050, turn="t1")))
    for _ in range(12):
        outbound.playout.pop()
    cut = {"interrupted": True, "turn": "t1", "spoken_ms": 999, "targets": ["audio"]}
    data = outbound.take(_result(coordinator=_json(cut)))
    assert data is not None
    value = json.loads(
        spb.StreamResponse.FromString(data).result.data_outputs["coordinator"].json.json_payload
    )
    assert value == {**cut, "spoken_ms": 12 * 20}
    assert outbound.playout.pop() is None  # nothing of the cut reply is left to play


def test_dropped_frames_are_added_to_the_sessions_metrics() -> None:
    inbound = Inbound(max_frames=0)
    inbound.frame(np.zeros(FRAME_SAMPLES, np.int16), 1, waiting=0)
    metrics = spb.StreamResponse(metrics=spb.StreamMetrics(chunks_dropped=2)).SerializeToString()
    data = Outbound(Playout(), inbound).take(metrics)
    assert data is not None
    assert spb.StreamResponse.FromString(data).metrics.chunks_dropped == 3


def test_audio_the_client_does_not_want_is_not_sent() -> None:
    outbound = Outbound(None, Inbound())
    assert outbound.take(_result(vad=_audio(0.02, 16_000))) is None
    mixed = outbound.take(_result(vad=_audio(0.02, 16_000), events=_json({"is_speech": 1})))
    assert mixed is not None
    assert list(spb.StreamResponse.FromString(mixed).result.data_outputs) == ["events"]
