"""Middleware around each item's processing."""

from .base import BaseMiddleware, Middleware

__all__ = ["BaseMiddleware", "Middleware"]
