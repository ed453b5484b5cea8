"""Provider-specific error classifiers."""

from .gemini import GeminiErrorClassifier

__all__ = ["GeminiErrorClassifier"]
