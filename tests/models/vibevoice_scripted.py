"""A VibeVoiceNode whose tiny random model is made to speak, for the tests only.

A random VibeVoice never chooses to speak (it ends at once, or wanders until its token
limit). This node forces its tokens through the node's ``logits_processors`` extension
point: ``audio_tokens_per_word`` speech tokens for each word of a sentence, then the
end of the speech, then the end of the text. The rest is the real thing: the speech
tokens go through the real diffusion head and acoustic decoder, 3,200 samples each.

A worker imports it by its module path, ``tests.models.vibevoice_scripted``: the
worker's working directory (the tests': the repository's root) is on its ``sys.path``,
since it runs ``python -m``. So this module imports nothing the node's environment
lacks: no pytest, nothing from the tests' conftest.
"""

from __future__ import annotations

from typing import Any

import attrs

from remotemedia.nodes.tts.vibevoice import VibeVoiceNode, VibeVoiceParams
from remotemedia.params import param

__all__ = ["ScriptedVibeVoiceNode", "ScriptedVibeVoiceParams"]


@attrs.frozen
class ScriptedVibeVoiceParams(VibeVoiceParams):
    """VibeVoiceParams, and how much the model is made to say."""

    audio_tokens_per_word: int = param(2, doc="Speech tokens forced per word.", ge=0)


class ScriptedVibeVoiceNode(VibeVoiceNode):
    """VibeVoiceNode with its speech tokens forced: a random model speaks on cue."""

    node_type = "ScriptedVibeVoiceNode"
    Params = ScriptedVibeVoiceParams

    def logits_processors(self, config: Any, sentence: str) -> list[Any]:
        """Force the speech tokens of one sentence, then its end."""
        import torch
        from transformers import LogitsProcessor

        count = self.params.audio_tokens_per_word * len(sentence.split())
        script = [config.audio_token_id] * count + [config.audio_eos_token_id, config.eos_token_id]

        class Scripted(LogitsProcessor):  # type: ignore[misc]
            def __init__(self) -> None:
                self.prompt: int | None = None

            def __call__(self, input_ids: Any, scores: Any) -> Any:
                if self.prompt is None:  # the first call sees the prompt alone
                    self.prompt = input_ids.shape[1]
                step = input_ids.shape[1] - self.prompt
                forced = torch.full_like(scores, float("-inf"))
                forced[:, script[min(step, len(script) - 1)]] = 0.0
                return forced

        return [Scripted()]
