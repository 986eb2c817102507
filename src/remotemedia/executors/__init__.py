"""Executors: where a node runs (in-process or worker process) and how workers are supervised."""
