"""tubetune: speech on the web -> a fine-tuned Whisper model, as a DVC pipeline."""

__version__ = "0.1.0"
