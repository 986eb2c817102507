"""Shared-memory names: any node id becomes names iceoryx2 accepts."""

from __future__ import annotations

import iceoryx2 as iox2
import pytest

from remotemedia.ipc.shm import safe_label

# Each one is refused by iceoryx2 as it is (non-ASCII, NUL, too long), or differs
# from another only in what a name must drop or cut.
IDS = [
    "vad",
    "ノード🎤",
    "a\x00b",
    "a\x01b",
    "\ud800",
    "x" * 300,
    "x" * 299 + "y",
    "ü",
    "ö",
    "",
    "a/b c.d:e",
    "👨\u200d👩\u200d👧",
]


@pytest.mark.parametrize("node_id", IDS)
def test_safe_label_makes_names_iceoryx2_accepts(node_id: str) -> None:
    # The longest names built from a label (see executors/process.py).
    base = f"{'f' * 12}_{safe_label(node_id)}"
    iox2.NodeName.new(f"rm-worker-{base}-{2**31}")
    iox2.NodeName.new(f"rm-{2**22}-{base}")
    iox2.ServiceName.new(f"{base}_output")


def test_safe_label_differs_for_every_id_and_is_stable() -> None:
    labels = [safe_label(node_id) for node_id in IDS]
    assert len(set(labels)) == len(IDS)
    assert labels == [safe_label(node_id) for node_id in IDS]


def test_safe_label_keeps_a_readable_start() -> None:
    assert safe_label("vad").startswith("vad-")
    assert safe_label("whisper large/v3").startswith("whisper_large_v3-")
    assert safe_label("x" * 300).startswith("x" * 24 + "-")
