"""Third-party code is patched where the feature that needs it starts, never at import.

Import-time patches are checked in a fresh interpreter (``python -c``): this test
process may have started a WebSocket edge already.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any, cast

import pytest
from grpclib.config import Configuration
from grpclib.protocol import Connection, H2Protocol

from remotemedia.transport import grpclib_internals
from remotemedia.transport.http2 import ServerH2Connection, h2_config

_HYPERCORN_STATE = """
import json
import hypercorn.protocol.ws_stream as ws_stream
import hypercorn.trio.run as run
from hypercorn.trio.tcp_server import TCPServer
from wsproto.extensions import PerMessageDeflate

def state():
    return {
        "PerMessageDeflate": ws_stream.PerMessageDeflate.__qualname__,
        "PerMessageDeflate is wsproto's": ws_stream.PerMessageDeflate is PerMessageDeflate,
        "TCPServer": run.TCPServer.__qualname__,
        "TCPServer is hypercorn's": run.TCPServer is TCPServer,
    }
"""

_UNTOUCHED = {
    "PerMessageDeflate": "PerMessageDeflate",
    "PerMessageDeflate is wsproto's": True,
    "TCPServer": "TCPServer",
    "TCPServer is hypercorn's": True,
}


def _run(script: str) -> Any:
    """What ``script`` prints as JSON on its last line, run in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _HYPERCORN_STATE + script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    "module",
    [
        "remotemedia.transport.web",
        "remotemedia.transport.grpc_server",
        "remotemedia.transport.native_server",
    ],
)
def test_import_leaves_hypercorn_unpatched(module: str) -> None:
    state = _run(f"import {module}\nprint(json.dumps(state()))")
    assert state == _UNTOUCHED, f"importing {module} patched hypercorn"


def test_apply_patches_hypercorn_once() -> None:
    states = _run(
        "from remotemedia.transport import hypercorn_internals\n"
        "hypercorn_internals.apply()\n"
        "first = state()\n"
        "hypercorn_internals.apply()\n"
        "print(json.dumps([first, state()]))"
    )
    patched = {
        "PerMessageDeflate": "_NoCompression",
        "PerMessageDeflate is wsproto's": False,
        "TCPServer": "_TimedTCPServer",
        "TCPServer is hypercorn's": False,
    }
    assert states == [patched, patched]


class _Transport(asyncio.Transport):
    """A socket that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


class _Adopted(Connection):
    pass


class _Stateful(Connection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra = 0


def test_adopt_retypes_connections_grpclib_built() -> None:
    transport = _Transport()

    async def connect() -> _Adopted:
        protocol = H2Protocol(cast(Any, None), Configuration().__for_server__(), h2_config())
        protocol.connection_made(transport)
        return grpclib_internals.adopt(protocol, _Adopted, ServerH2Connection)

    connection = asyncio.run(connect())
    assert type(connection) is _Adopted
    assert type(grpclib_internals.h2_of(connection)) is ServerH2Connection
    assert grpclib_internals.transport_of(connection) is transport
    assert transport.written  # grpclib's own connection_made ran: its SETTINGS went out


def test_adopt_refuses_subclass_with_init() -> None:
    with pytest.raises(TypeError, match=r"_Stateful cannot stand in .* give it no __init__"):
        grpclib_internals.adopt(cast(Any, None), _Stateful, ServerH2Connection)


def test_the_webrtc_adapters_patch_nothing_at_import_and_release_audio_promptly() -> None:
    code = (
        "import aiortc.rtcrtpreceiver as r, aioice.ice as i\n"
        "from aiortc.jitterbuffer import JitterBuffer\n"
        "before = (r.JitterBuffer is JitterBuffer, i.get_host_addresses.__module__)\n"
        "from remotemedia.transport import aiortc_internals, aioice_internals\n"
        "untouched = (r.JitterBuffer is JitterBuffer, i.get_host_addresses.__module__)\n"
        "aiortc_internals.apply(); aioice_internals.offer_only(['127.0.0.1'])\n"
        "audio, video = r.JitterBuffer(16, prefetch=4), r.JitterBuffer(128, is_video=True)\n"
        "print(before == untouched, audio._prefetch, video._prefetch,"
        " i.get_host_addresses(True, True))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().split(maxsplit=3) == ["True", "1", "0", "['127.0.0.1']"]
