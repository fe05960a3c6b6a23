"""Python client for idlegrid: submit jobs to a gateway, follow them, fetch verified outputs."""

from ._version import __version__
from .client import Client, Job, PreparedJob, Result
from .errors import (
    BudgetExhausted,
    IdlegridError,
    InvalidJob,
    JobFailed,
    NotFound,
    QuotaExceeded,
    TooManyTasks,
    TransactionRejected,
    Unauthorized,
    UnsafeTransaction,
)
from .keys import Key, account_text, parse_account

__all__ = [
    "BudgetExhausted",
    "Client",
    "IdlegridError",
    "InvalidJob",
    "Job",
    "JobFailed",
    "Key",
    "NotFound",
    "PreparedJob",
    "QuotaExceeded",
    "Result",
    "TooManyTasks",
    "TransactionRejected",
    "Unauthorized",
    "UnsafeTransaction",
    "__version__",
    "account_text",
    "parse_account",
]
