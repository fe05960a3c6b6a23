"""Borsh encoding of idlegrid transaction bodies, and signed transactions.

A body is: chain_id (u32 length + UTF-8), nonce u64, fee u64, then the kind
(a u8 variant index and its fields). Integers are little-endian.
"""

from __future__ import annotations

import struct
from typing import Any, Mapping, Optional

from blake3 import blake3

from .keys import Key, parse_account

__all__ = [
    "CHAIN_ID_BYTES_MAX",
    "CLAIM_REWARDS",
    "CLOSE_JOB",
    "DELEGATE",
    "OPEN_JOB",
    "TRANSFER",
    "UNDELEGATE",
    "cid_bytes",
    "cid_of",
    "cid_text",
    "derive_job_id",
    "encode_claim_rewards",
    "encode_close_job",
    "encode_delegate",
    "encode_open_job",
    "encode_transfer",
    "encode_undelegate",
    "is_cid",
    "job_id_bytes",
    "job_id_text",
    "signed",
    "transaction_hash",
]

#: Variant indexes of the transaction kinds this client builds.
TRANSFER = 0
OPEN_JOB = 3
CLOSE_JOB = 6
DELEGATE = 8
UNDELEGATE = 9
CLAIM_REWARDS = 10

#: Longest chain id the ledger takes.
CHAIN_ID_BYTES_MAX = 64

_U64_MAX = (1 << 64) - 1


def _u8(value: int) -> bytes:
    return struct.pack("<B", value)


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _u64(value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    if not 0 <= value <= _U64_MAX:
        raise ValueError(f"{value} does not fit in a u64")
    return struct.pack("<Q", value)


def _string(text: str, limit: Optional[int] = None) -> bytes:
    raw = text.encode("utf-8")
    if limit is not None and len(raw) > limit:
        raise ValueError(f"{text!r} is longer than {limit} bytes")
    return _u32(len(raw)) + raw


def _hex32(text: str, prefix: str, what: str) -> bytes:
    if not isinstance(text, str) or not text.startswith(prefix):
        raise ValueError(f"not a {what} (want {prefix} + 64 hex digits): {text!r}")
    digits = text[len(prefix) :]
    if len(digits) != 64 or digits != digits.lower():
        raise ValueError(f"not a {what} (want {prefix} + 64 lowercase hex digits): {text!r}")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"not a {what}: {text!r}") from None


def cid_bytes(cid: str) -> bytes:
    """The 32 bytes of a content id (`b3:` + 64 hex)."""
    return _hex32(cid, "b3:", "content id")


def cid_text(raw: bytes) -> str:
    """The text form of a 32-byte content id."""
    if len(raw) != 32:
        raise ValueError("a content id has 32 bytes")
    return "b3:" + raw.hex()


def is_cid(text: Any) -> bool:
    """Whether `text` is a well-formed content id."""
    try:
        cid_bytes(text)
    except ValueError:
        return False
    return True


def cid_of(data: bytes) -> str:
    """The content id of `data`: its BLAKE3 hash."""
    return cid_text(blake3(data).digest())


def job_id_bytes(job_id: str) -> bytes:
    """The 32 bytes of a job id (`job:` + 64 hex)."""
    return _hex32(job_id, "job:", "job id")


def job_id_text(raw: bytes) -> str:
    """The text form of a 32-byte job id."""
    if len(raw) != 32:
        raise ValueError("a job id has 32 bytes")
    return "job:" + raw.hex()


def derive_job_id(requestor: str, nonce: int) -> str:
    """The ledger's id of the job its requestor opens with transaction nonce `nonce`."""
    hasher = blake3(derive_key_context="idlegrid job id v1")
    hasher.update(parse_account(requestor) + _u64(nonce))
    return job_id_text(hasher.digest())


def _header(chain_id: str, nonce: int, fee: int) -> bytes:
    return _string(chain_id, CHAIN_ID_BYTES_MAX) + _u64(nonce) + _u64(fee)


def encode_transfer(chain_id: str, nonce: int, fee: int, to_did: str, amount: int) -> bytes:
    """The body of a Transfer of `amount` to the account `to_did`."""
    return _header(chain_id, nonce, fee) + _u8(TRANSFER) + parse_account(to_did) + _u64(amount)


def encode_delegate(chain_id: str, nonce: int, fee: int, validator: str, amount: int) -> bytes:
    """The body of a Delegate of `amount` to the validator `validator` (a did:key)."""
    return (
        _header(chain_id, nonce, fee) + _u8(DELEGATE) + parse_account(validator) + _u64(amount)
    )


def encode_undelegate(chain_id: str, nonce: int, fee: int, validator: str, amount: int) -> bytes:
    """The body of an Undelegate of `amount` (all of it, if more) from `validator`."""
    return (
        _header(chain_id, nonce, fee) + _u8(UNDELEGATE) + parse_account(validator) + _u64(amount)
    )


def encode_claim_rewards(chain_id: str, nonce: int, fee: int, validator: str) -> bytes:
    """The body of a ClaimRewards of what the delegation to `validator` has earned."""
    return _header(chain_id, nonce, fee) + _u8(CLAIM_REWARDS) + parse_account(validator)


def encode_close_job(chain_id: str, nonce: int, fee: int, job_id: str) -> bytes:
    """The body of a CloseJob for `job_id` (text form)."""
    return _header(chain_id, nonce, fee) + _u8(CLOSE_JOB) + job_id_bytes(job_id)


def encode_open_job(terms: Mapping[str, Any]) -> bytes:
    """The body of the OpenJob a gateway's `terms` describe (see the job API).

    `terms` has chain_id, nonce, fee, module, spec, escrow,
    price_per_million_fuel, deadline_height, limits {fuel, memory_bytes,
    output_bytes} and agent (a did:key, or None for no agent).
    """
    limits = terms["limits"]
    agent = terms.get("agent")
    encoded_agent = _u8(0) if agent is None else _u8(1) + parse_account(agent)
    return (
        _header(terms["chain_id"], terms["nonce"], terms["fee"])
        + _u8(OPEN_JOB)
        + cid_bytes(terms["module"])
        + cid_bytes(terms["spec"])
        + _u64(terms["escrow"])
        + _u64(terms["price_per_million_fuel"])
        + _u64(terms["deadline_height"])
        + _u64(limits["fuel"])
        + _u64(limits["memory_bytes"])
        + _u64(limits["output_bytes"])
        + encoded_agent
    )


def signed(body: bytes, key: Key) -> bytes:
    """A signed transaction: body, signer (32 bytes), signature (64 bytes)."""
    return body + key.public_key + key.sign_transaction(body)


def transaction_hash(signed_transaction: bytes) -> str:
    """A signed transaction's hash, as the ledger names it (its content id)."""
    return cid_of(signed_transaction)
