"""IPC between the runtime and worker processes: the frame codec (sans-IO)."""
