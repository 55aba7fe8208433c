"""Credentials never leave the process: masking of URLs, DSNs and secrets in text.

Strategy: one function, ``mask_secrets``, rewrites every ``scheme://user:password@host``
in a string to ``scheme://user:***@host`` (and ``scheme://token@host`` to
``scheme://***@host``), plus ``token=...``/``password=...`` query parameters. Everything
that shows a URL goes through it: API responses (``redact`` walks a JSON document), log
records (``MaskingFormatter`` masks the formatted line, tracebacks included), exception
messages and CLI output. Masking the final text rather than each call site means a new
log line or error message cannot forget it. The function itself is the configuration
toolkit's (``tomlconf``), whose ``ConfigError`` masks its messages with it: one rule for
what counts as a credential.
"""

from __future__ import annotations

import logging
from typing import Any

from tomlconf import MASK, mask_secrets


def redact(doc: Any) -> Any:
    """A JSON-like document with every string masked (for API responses)."""
    if isinstance(doc, str):
        return mask_secrets(doc)
    if isinstance(doc, dict):
        return {k: redact(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [redact(v) for v in doc]
    return doc


class MaskingFormatter(logging.Formatter):
    """Wraps a formatter and masks credentials in the finished line (traceback included)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(self.inner.format(record))


def install_log_masking(*logger_names: str) -> None:
    """Mask credentials in everything the handlers of these loggers (and root) write.

    Call after logging is configured (uvicorn configures its own handlers when its
    Config is created). Idempotent.
    """
    for name in ("", *logger_names):
        for h in logging.getLogger(name or None).handlers:
            if not isinstance(h.formatter, MaskingFormatter):
                h.setFormatter(MaskingFormatter(h.formatter))


__all__ = ["MASK", "MaskingFormatter", "install_log_masking", "mask_secrets",
           "redact"]
