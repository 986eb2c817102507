"""The network edge: the gRPC server (grpclib on trio-asyncio) and the metrics HTTP endpoint."""
