"""Per-node Python environments: a model node's worker runs in a venv of its own.

A node type declares the Python and the packages its worker needs
(:attr:`remotemedia.nodes.Node.environment`); the server builds that environment once,
in a cache folder (:mod:`remotemedia.environments.cache`), and starts the node's
workers with its interpreter. So a model whose packages conflict with the server's,
or that needs another Python, still runs, and the server process never imports them.

This package exports the sans-IO description; the cache (Trio) lives in
:mod:`~remotemedia.environments.cache`, interpreter discovery in
:mod:`~remotemedia.environments.interpreters`.
"""

from remotemedia.environments.spec import Environment, Interpreter, node_environment

__all__ = ["Environment", "Interpreter", "node_environment"]
