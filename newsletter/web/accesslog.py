"""The access log without query strings: unsubscribe URLs carry a reader's token (and
old links their address), which have no place in a log file."""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"


class DropQuery(logging.Filter):
    """Cut every string argument of an access-log record at its `?`.

    uvicorn logs (client, method, path with query, HTTP version, status); cutting every
    string rather than the third keeps working if that order changes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(a.partition("?")[0] if isinstance(a, str) else a
                                for a in record.args)
        if isinstance(record.msg, str) and "?" in record.msg and not record.args:
            record.msg = record.msg.partition("?")[0]
        return True


_FILTER = DropQuery()


def drop_queries_from_access_log() -> None:
    """Install the filter on uvicorn's access logger (once; it survives uvicorn's own
    logging set-up, which replaces handlers but keeps a logger's filters)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
