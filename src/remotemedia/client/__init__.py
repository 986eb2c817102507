"""Python client for ``remotemedia serve`` (any ``remotemedia.v1`` server), for asyncio and Trio.

asyncio::

    async with Client.connect("127.0.0.1:50051", token="...") as client:
        async with client.stream("vad") as stream:          # file, bundled name, dict or Manifest
            await stream.send(Audio(samples, 16_000))
            await stream.close()                             # flush, then `closed`
            async for result in stream:
                print(result.node_id, result.sequence, result.data)

Trio: ``async with open_trio_client(...) as client`` gives the same API with Trio
awaitables (grpclib runs on a trio-asyncio loop underneath).
"""

from remotemedia.client.client import Client, ServerError, StreamHandle, open_trio_client

__all__ = ["Client", "ServerError", "StreamHandle", "open_trio_client"]
