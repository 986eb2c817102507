"""The executor registry: which node types run in-process and which in worker processes.

Resolution order, as in the original runtime:

1. an executor named for the node in the manifest (``executor:``);
2. an explicit mapping for the node type;
3. the first matching pattern rule, highest priority first (among equal priorities,
   the earlier registered wins); patterns are matched with ``re.fullmatch``;
4. the default executor.
"""

from __future__ import annotations

import enum
import re

import attrs

__all__ = ["DEFAULT_PROCESS_PATTERN", "Executor", "ExecutorRegistry", "PatternRule"]


class Executor(enum.Enum):
    """Where a node runs."""

    INPROCESS = "inprocess"
    PROCESS = "process"


DEFAULT_PROCESS_PATTERN = r"(Whisper|LFM2|VibeVoice|Piper|Kokoro|HF.*)\w*Node"
"""Model nodes: each gets its own worker process by default."""

DSP_NODES = ("AudioChunkerNode", "FastResampleNode", "SileroVADNode", "AudioBufferAccumulatorNode")


@attrs.frozen
class PatternRule:
    """Node types matching ``pattern`` run on ``executor``.

    Attributes:
        pattern: A regular expression matched against the whole node type name.
        executor: Where matching node types run.
        priority: Higher wins over lower.
        description: Why the rule exists.
    """

    pattern: str
    executor: Executor
    priority: int = 0
    description: str = ""

    def matches(self, node_type: str) -> bool:
        """Whether the rule applies to ``node_type``."""
        return re.fullmatch(self.pattern, node_type) is not None


@attrs.define
class ExecutorRegistry:
    """Decides the executor of each node type.

    Attributes:
        explicit: Node type -> executor, checked before any pattern.
        rules: Pattern rules, kept sorted by priority (highest first, stable).
        default: The executor when nothing else applies.
    """

    explicit: dict[str, Executor] = attrs.field(factory=dict)
    rules: list[PatternRule] = attrs.field(factory=list)
    default: Executor = Executor.INPROCESS

    @classmethod
    def with_defaults(cls) -> ExecutorRegistry:
        """The server defaults: DSP nodes in-process, model nodes in worker processes."""
        registry = cls(explicit=dict.fromkeys(DSP_NODES, Executor.INPROCESS))
        registry.add_rule(
            PatternRule(
                DEFAULT_PROCESS_PATTERN,
                Executor.PROCESS,
                priority=100,
                description="model nodes get their own worker process",
            )
        )
        return registry

    def add_rule(self, rule: PatternRule) -> None:
        """Add a pattern rule after every rule of equal or higher priority."""
        index = next(
            (i for i, existing in enumerate(self.rules) if existing.priority < rule.priority),
            len(self.rules),
        )
        self.rules.insert(index, rule)

    def executor_for(self, node_type: str, override: Executor | None = None) -> Executor:
        """Where a node of ``node_type`` runs (``override``, from the manifest, wins)."""
        if override is not None:
            return override
        if node_type in self.explicit:
            return self.explicit[node_type]
        for rule in self.rules:
            if rule.matches(node_type):
                return rule.executor
        return self.default
