"""Ed25519 keys, did:key account names and the CLI's key file format."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from nacl.signing import SigningKey, VerifyKey

__all__ = [
    "Key",
    "TRANSACTION_DOMAIN",
    "account_text",
    "b58decode",
    "b58encode",
    "parse_account",
    "verify_transaction",
]

PathLike = Union[str, "os.PathLike[str]"]

#: What every transaction signature covers before the body (domain, then NUL).
TRANSACTION_DOMAIN = b"idlegrid transaction v1\x00"

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_ED25519_MULTICODEC = b"\xed\x01"
_DID_KEY_PREFIX = "did:key:z"


def b58encode(data: bytes) -> str:
    """Base58 (bitcoin alphabet) text of `data`; leading zero bytes become '1'."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rest = divmod(number, 58)
        digits.append(_B58_ALPHABET[rest])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """The bytes of base58 (bitcoin alphabet) text; ValueError on a bad digit."""
    number = 0
    for char in text:
        if char not in _B58_INDEX:
            raise ValueError(f"not a base58 digit: {char!r}")
        number = number * 58 + _B58_INDEX[char]
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


def account_text(public_key: bytes) -> str:
    """The did:key text of a 32-byte ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError(f"an ed25519 public key has 32 bytes, not {len(public_key)}")
    return _DID_KEY_PREFIX + b58encode(_ED25519_MULTICODEC + public_key)


def parse_account(did: str) -> bytes:
    """The 32-byte ed25519 public key named by a did:key account."""
    if not did.startswith(_DID_KEY_PREFIX):
        raise ValueError(f"not a did:key account (want did:key:z...): {did!r}")
    raw = b58decode(did[len(_DID_KEY_PREFIX) :])
    if len(raw) != 34 or raw[:2] != _ED25519_MULTICODEC:
        raise ValueError(f"not an ed25519 did:key: {did!r}")
    return raw[2:]


class Key:
    """An ed25519 signing key: an idlegrid account."""

    def __init__(self, seed: bytes) -> None:
        """A key from its 32-byte secret seed."""
        if len(seed) != 32:
            raise ValueError(f"a secret seed has 32 bytes, not {len(seed)}")
        self._signing = SigningKey(bytes(seed))

    @classmethod
    def generate(cls) -> "Key":
        """A fresh random key."""
        return cls(bytes(SigningKey.generate()))

    @classmethod
    def from_hex(cls, text: str) -> "Key":
        """A key from its seed as 64 hex digits."""
        text = text.strip()
        if len(text) != 64:
            raise ValueError("a secret key is 64 hex digits")
        return cls(bytes.fromhex(text))

    @classmethod
    def load(cls, path: PathLike) -> "Key":
        """Reads a key file: `#` lines are comments, the first other line is the seed."""
        text = Path(path).read_text(encoding="utf-8")
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                return cls.from_hex(line)
            except ValueError as error:
                raise ValueError(f"{path}: not a key file ({error})") from None
        raise ValueError(f"{path}: not a key file (no secret key line)")

    def save(self, path: PathLike) -> None:
        """Writes the key file (mode 0600); FileExistsError when one is there."""
        text = f"# idlegrid secret key of {self.account}\n{self.seed.hex()}\n"
        fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed."""
        return bytes(self._signing)

    @property
    def public_key(self) -> bytes:
        """The 32-byte ed25519 public key."""
        return bytes(self._signing.verify_key)

    @property
    def account(self) -> str:
        """The account's did:key text."""
        return account_text(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte ed25519 signature of `message` as it is."""
        return self._signing.sign(message).signature

    def sign_transaction(self, body: bytes) -> bytes:
        """The 64-byte signature of a transaction body (with its domain tag)."""
        return self.sign(TRANSACTION_DOMAIN + body)

    def __repr__(self) -> str:
        return f"Key({self.account})"


def verify_transaction(public_key: bytes, body: bytes, signature: bytes) -> bool:
    """Whether `signature` is `public_key`'s signature of a transaction body."""
    try:
        VerifyKey(public_key).verify(TRANSACTION_DOMAIN + body, signature)
    except Exception:  # nacl raises BadSignatureError, or ValueError on bad sizes
        return False
    return True
