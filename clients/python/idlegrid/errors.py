"""Errors raised by the client, and the mapping from the gateway's HTTP answers."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, List, Mapping, Optional, Sequence

__all__ = [
    "BudgetExhausted",
    "IdlegridError",
    "InvalidJob",
    "JobFailed",
    "NotFound",
    "QuotaExceeded",
    "TooManyTasks",
    "TransactionRejected",
    "Unauthorized",
    "UnsafeTransaction",
    "error_from_response",
    "parse_retry_after",
]


class IdlegridError(Exception):
    """An error from the gateway (`status` is its HTTP status) or found by the client.

    `code` is a snake_case reason such as `unknown_job` or `corrupt_blob`;
    `status` is None for errors the client found itself.
    """

    def __init__(self, status: Optional[int], code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Unauthorized(IdlegridError):
    """401: the gateway is keyed and the API key is missing or unknown."""


class QuotaExceeded(IdlegridError):
    """429: too many jobs at once or too many bytes uploaded this hour.

    `retry_after` is the Retry-After header in seconds (None when absent).
    """

    def __init__(
        self, status: Optional[int], code: str, message: str, retry_after: Optional[int] = None
    ) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class TooManyTasks(IdlegridError):
    """413 `too_many_tasks`: the job has more tasks than the API key allows."""


class NotFound(IdlegridError):
    """404: no such job or blob (or it belongs to another API key)."""


class InvalidJob(IdlegridError):
    """400 `invalid_job`: the gateway refused the job description."""


class JobFailed(IdlegridError):
    """The job could not run; `code`/`message` are the progress view's error."""

    def __init__(self, job: str, code: str, message: str) -> None:
        super().__init__(None, code, f"job {job} failed: {message}")
        self.job = job


class BudgetExhausted(IdlegridError):
    """The job finished because its budget would not pay for more tasks.

    `results` holds every result yielded before this was raised.
    """

    def __init__(self, job: str, progress: Mapping[str, Any], results: Sequence[Any] = ()) -> None:
        decided = int(progress.get("accepted", 0)) + int(progress.get("failed", 0))
        total = progress.get("tasks_total", "?")
        super().__init__(
            None,
            "budget_exhausted",
            f"job {job} ran out of budget after {decided} of {total} tasks "
            f"(paid {progress.get('paid', '?')} of {progress.get('budget', '?')})",
        )
        self.job = job
        self.progress = dict(progress)
        self.results: List[Any] = list(results)


class UnsafeTransaction(IdlegridError):
    """The gateway's transaction is not the job the client asked for; nothing was signed."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(
            None,
            "unsafe_transaction",
            "refusing to sign the job's transaction: " + "; ".join(problems),
        )
        self.problems = list(problems)


class TransactionRejected(IdlegridError):
    """The ledger refused a transaction (`code` is its reason, e.g. `stale_nonce`)."""

    def __init__(self, transaction: str, code: str, message: str) -> None:
        super().__init__(None, code, f"transaction {transaction} was rejected: {message}")
        self.transaction = transaction


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[int]:
    """Seconds from a Retry-After header: delay seconds or an HTTP date (None if absent)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0, int(when.timestamp() - (time.time() if now is None else now) + 0.999))


def error_from_response(
    status: int, body: bytes, headers: Optional[Mapping[str, str]] = None
) -> IdlegridError:
    """The error for a non-2xx answer with the API's `{"error":{"code","message"}}` body."""
    code = f"http_{status}"
    message = body.decode("utf-8", "replace").strip()[:500] or f"HTTP status {status}"
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        code = str(parsed["error"].get("code") or code)
        message = str(parsed["error"].get("message") or message)
    if status == 401:
        return Unauthorized(status, code, message)
    if status == 429:
        retry = None
        if headers is not None:
            retry = parse_retry_after(_header(headers, "retry-after"))
        return QuotaExceeded(status, code, message, retry)
    if status == 413 and code == "too_many_tasks":
        return TooManyTasks(status, code, message)
    if status == 404:
        return NotFound(status, code, message)
    if status == 400 and code == "invalid_job":
        return InvalidJob(status, code, message)
    return IdlegridError(status, code, message)


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    value = headers.get(name)
    if value is None:
        for key, other in headers.items():
            if key.lower() == name:
                return other
    return value
