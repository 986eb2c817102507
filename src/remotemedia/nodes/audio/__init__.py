"""Audio nodes: resampling, chunking, voice activity detection, utterance assembly."""
