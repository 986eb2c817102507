"""How workers are run: their shared memory, deadlines, memory budget and restarts."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from remotemedia.environments.cache import Environments
from remotemedia.environments.spec import Environment
from remotemedia.executors.link import LinkSeam, same_link
from remotemedia.executors.supervision import RestartPolicy
from remotemedia.ipc.shm import ShmNamespace

__all__ = ["WorkerSettings"]


@attrs.frozen
class WorkerSettings:
    """How workers are run.

    Attributes:
        namespace: Where their shared memory lives.
        stop_grace: Seconds between closing the control socket and SIGTERM, and
            between SIGTERM and SIGKILL.
        call_timeout: Seconds a worker may go without any progress on an input
            before it counts as hung and is replaced.
        start_timeout: Seconds a worker may take to become ready (load its model);
            a slower start counts as a failed start.
        max_rss_mb: After an input, a worker whose resident memory exceeds this
            many MiB is replaced by a fresh one (not a failure); 0: never. Only for
            nodes that keep no state between inputs, such as model nodes.
        restart: Backoff between restarts of a failed worker.
        environments: Where the Python environments of nodes that need one are
            built (``--env-dir``).
        node_environments: The server's own environment for a node type, replacing
            the one the node type declares (``--node-config``).
        link_seam: Wraps each worker's link (a fault kit's seam); default: none.
        on_event: Called with ``(event, node_id)`` as workers start
            (``worker.started``), fail (``worker.failed``) and circuit breakers open
            (``breaker.open``): for a fault kit's trace.
    """

    namespace: ShmNamespace
    stop_grace: float = 2.0
    call_timeout: float = 120.0
    start_timeout: float = 120.0
    max_rss_mb: float = 0.0
    restart: RestartPolicy = attrs.Factory(RestartPolicy)
    environments: Environments = attrs.Factory(Environments)
    node_environments: Mapping[str, Environment] = attrs.field(factory=dict)
    link_seam: LinkSeam = same_link
    on_event: Callable[[str, str], None] = attrs.field(default=lambda event, node_id: None)
