"""Facts of the Whisper models the pipeline is built around, spelled once.

Every module that needs one imports it from here, so no two spellings can disagree.
"""

SAMPLE_RATE = 16_000
"""Hz of Whisper's input audio: what media are resampled to and Silero VAD scores at."""
WINDOW_S = 30.0
"""Seconds of audio in one encoder window: the longest chunk, the timestamp tokens' range."""
MAX_TARGET_POSITIONS = 448
"""Decoder positions: the longest label (special tokens included) and generation."""
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""Whisper's temperature fallback (openai/whisper's default; OpenAI's API at temperature 0)."""
