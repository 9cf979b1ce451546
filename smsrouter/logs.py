"""structlog set-up: one JSON object per line on stdout (CONTRACT §7)."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from smsrouter.router.log_limits import RepeatLimiter
from smsrouter.router.recent_errors import RecentErrors

# Keys whose values must never reach a log line, whatever a caller binds.
_SECRET_KEYS = frozenset(
    {"password", "api_key", "webhook_secret", "secret", "dsn", "authorization"}
)

# The latest warnings and errors of this process, for the status page
# (CONTRACT §8), and the info-level faults it shows besides: a carrier's
# temporary failure or refusal is logged at info (one is expected now and
# then) but an operator looking at the page wants to see them come.
recent_errors = RecentErrors(also=("carrier failed temporarily", "carrier refused"))


def _redact_secrets(
    _: object, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in _SECRET_KEYS & event.keys():
        event[key] = "[redacted]"
    return event


def processors(renderer: structlog.types.Processor) -> list[structlog.types.Processor]:
    """Every line's way to `renderer`."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
        # After the redaction: the page shows nothing the log would not.
        recent_errors,
        structlog.processors.format_exc_info,
        renderer,
    ]


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    renderer: structlog.types.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=processors(renderer),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # No file given: each line goes to the sys.stdout of the moment, so
        # a stream swapped in and closed by an embedding program (a test
        # runner's capture) is never written to after it is gone.
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    # Libraries that use the standard logging module (aiohttp, asyncpg)
    # go to stderr at warning level so they never interleave with our JSON.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatedLibraryLines) for f in handler.filters):
            handler.addFilter(RepeatedLibraryLines())


class RepeatedLibraryLines(logging.Filter):
    """A library's repeated line once per interval, with its error on one
    line: while the database is away, asyncpg's pool writes a warning and a
    20-line traceback every time it fails to restore its connection floor
    (CONTRACT §11: logs stay readable)."""

    def __init__(self) -> None:
        super().__init__()
        self._limiter = RepeatLimiter()

    def filter(self, record: logging.LogRecord) -> bool:
        held = self._limiter.admit((record.name, record.msg))
        if held is None:
            return False
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]!r}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        if held:
            record.msg = f"{record.getMessage()} (repeated {held} times)"
            record.args = None
        return True
