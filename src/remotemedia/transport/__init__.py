"""The edges: gRPC (native on Trio, grpclib on trio-asyncio), WebSocket, metrics.

All are opened by :mod:`remotemedia.transport.serving`.
"""
