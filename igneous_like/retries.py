"""Retries with backoff on transient storage errors, inside a task and apart from the queue's
retry budget (--max-attempts), so a flaky store does not burn a task's attempts.

Three layers, innermost first:
  1. botocore retries each S3 request (set to its "standard" mode: 5xx, throttling codes,
     connection errors; AWS_MAX_ATTEMPTS attempts, default 5 here).
  2. cloud-files retries each storage call (get, put, head, size, delete, list pages) 7 times
     with random exponential waits up to 60 s. It never logs them: `configure_library` adds a
     log line per retry, and IGNEOUS_LIKE_STORAGE_ATTEMPTS / IGNEOUS_LIKE_STORAGE_MAX_WAIT set
     its budget. Its exists() and a few other calls have no retry at all.
  3. `run_task` re-runs a whole task (tasks are idempotent) when a transient error got through
     anyway, e.g. an outage longer than the budgets above: IGNEOUS_LIKE_TASK_RETRIES times
     (default 3), waiting IGNEOUS_LIKE_RETRY_DELAY * 2^i seconds (default 5; at most 60).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

# botocore error codes for throttling and server trouble (HTTP status aside)
TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "RequestThrottled", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
}
# exception class names of connection-level failures in botocore, urllib3, requests, google-api-core
TRANSIENT_TYPES = {
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "ProtocolError", "IncompleteRead", "ChunkedEncodingError", "ResponseStreamingError",
    "ServiceUnavailable", "TooManyRequests", "InternalServerError", "BadGateway", "GatewayTimeout",
}


def is_transient(exc: BaseException) -> bool:
    """A server-side or network hiccup worth retrying (not a missing file or bad data)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in TRANSIENT_TYPES:
            return True
        response = getattr(exc, "response", None)
        if isinstance(response, dict):  # botocore ClientError
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if status >= 500 or status == 429 or response.get("Error", {}).get("Code") in TRANSIENT_CODES:
                return True
        status = getattr(response, "status_code", None)  # requests HTTPError
        if isinstance(status, int) and (status >= 500 or status == 429):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def configure_library() -> None:
    """Log cloud-files' own retries and apply the budget from the environment (idempotent; each
    worker process calls it before its first task)."""
    import tenacity
    from cloudfiles import interfaces

    attempts = os.environ.get("IGNEOUS_LIKE_STORAGE_ATTEMPTS")
    max_wait = os.environ.get("IGNEOUS_LIKE_STORAGE_MAX_WAIT")
    for cls in (interfaces.S3Interface, interfaces.GoogleCloudStorageInterface, interfaces.HttpInterface):
        for fn in vars(cls).values():
            policy = getattr(fn, "retry", None)
            if not isinstance(policy, tenacity.Retrying):
                continue
            policy.before_sleep = _log_library_retry
            if attempts:
                policy.stop = tenacity.stop_after_attempt(int(attempts))
            if max_wait:
                policy.wait = tenacity.wait_random_exponential(min(0.5, float(max_wait)), float(max_wait))


def _log_library_retry(state: Any) -> None:
    exc = state.outcome.exception() if state.outcome else None
    what = getattr(state.fn, "__qualname__", "storage call")
    print(f"WARNING storage retry {state.attempt_number} of {what}: {type(exc).__name__}: {exc}".splitlines()[0],
          file=sys.stderr, flush=True)


def run_task(task: Callable[[], Any]) -> Any:
    """Run a task, re-running it after a transient storage error with exponential backoff."""
    configure_library()
    retries = int(os.environ.get("IGNEOUS_LIKE_TASK_RETRIES", 3))
    delay = float(os.environ.get("IGNEOUS_LIKE_RETRY_DELAY", 5))
    for attempt in range(retries + 1):
        try:
            return task()
        except Exception as exc:
            if attempt == retries or not is_transient(exc):
                raise
            wait = min(60.0, delay * 2**attempt)
            line = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(f"WARNING transient storage error, task run again in {wait:g}s "
                  f"({attempt + 1}/{retries}): {line}", file=sys.stderr, flush=True)
            time.sleep(wait)
