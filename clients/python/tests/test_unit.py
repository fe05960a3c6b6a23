"""Unit tests: keys, encodings, error mapping, and the client against an in-memory gateway."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import httpx
import pytest
from blake3 import blake3
from fakegateway import FakeGateway

import idlegrid
from idlegrid import (
    BudgetExhausted,
    Client,
    IdlegridError,
    InvalidJob,
    JobFailed,
    Key,
    NotFound,
    QuotaExceeded,
    TooManyTasks,
    Unauthorized,
    UnsafeTransaction,
    account_text,
    parse_account,
    tx,
)
from idlegrid.client import check_open_job, iter_sse
from idlegrid.errors import error_from_response, parse_retry_after
from idlegrid.keys import b58decode, b58encode, verify_transaction

# RFC 8032, test 1: seed, public key, signature of the empty message.
RFC_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
RFC_SIGNATURE = (
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555f"
    "b8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
# What `idlegrid wallet --key F address` prints for a key file holding RFC_SEED.
RFC_DID = "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw"
# A key file written by `idlegrid wallet new`, as it was written.
CLI_KEY_FILE = (
    "# idlegrid secret key of did:key:z6MkqCGGzg7BAFVsUvfHnMFSDbxdHCFCWkb32J91fvvFSkj7\n"
    "75a2362dd8a6b6ef37e354c9b4e89cb9bca7e2afd047a8519e2be282dab3cf7d\n"
)
CLI_DID = "did:key:z6MkqCGGzg7BAFVsUvfHnMFSDbxdHCFCWkb32J91fvvFSkj7"


# ---- base58 and did:key ----


@pytest.mark.parametrize(
    "raw, text",
    [
        (b"", ""),
        (b"\0", "1"),
        (b"\0\0\x01", "112"),
        (b"hello world", "StV1DL6CwTryKyV"),
        (b"Hello World!", "2NEpo7TZRRrLZSi2U"),
        (bytes.fromhex("0000287fb4cd"), "11233QC4"),
    ],
)
def test_base58_vectors(raw: bytes, text: str) -> None:
    assert b58encode(raw) == text
    assert b58decode(text) == raw


def test_base58_round_trip_and_bad_digit() -> None:
    for size in range(0, 40):
        raw = os.urandom(size)
        assert b58decode(b58encode(raw)) == raw
    with pytest.raises(ValueError):
        b58decode("0OIl")


def test_key_matches_rfc8032_and_the_cli() -> None:
    key = Key.from_hex(RFC_SEED)
    assert key.public_key.hex() == RFC_PUBLIC
    assert key.sign(b"").hex() == RFC_SIGNATURE
    assert key.account == RFC_DID
    assert account_text(bytes.fromhex(RFC_PUBLIC)) == RFC_DID
    assert parse_account(RFC_DID).hex() == RFC_PUBLIC


def test_parse_account_refuses_other_text() -> None:
    for bad in [
        "",
        "did:key:",
        "did:web:example.com",
        "did:key:zzz",
        RFC_DID[:-3],
        RFC_DID + "1",
        "z6Mk",
    ]:
        with pytest.raises(ValueError):
            parse_account(bad)
    # A valid multibase key of another kind (secp256k1's 0xe7 0x01 prefix).
    with pytest.raises(ValueError):
        parse_account("did:key:z" + b58encode(b"\xe7\x01" + bytes(33)))


def test_key_load_reads_the_cli_key_file(tmp_path: Path) -> None:
    path = tmp_path / "cli.key"
    path.write_text(CLI_KEY_FILE)
    assert Key.load(path).account == CLI_DID
    # Comments and blank lines anywhere before the seed are skipped.
    other = tmp_path / "commented.key"
    other.write_text("\n# one\n  \n# two\n" + RFC_SEED + "\n# after\n")
    assert Key.load(other).account == RFC_DID


def test_key_load_refuses_a_bad_file(tmp_path: Path) -> None:
    for name, text in [("empty", "# nothing\n"), ("short", "abcd\n"), ("nothex", "zz" * 32 + "\n")]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ValueError):
            Key.load(path)


def test_key_save_format_mode_and_no_overwrite(tmp_path: Path) -> None:
    key = Key.generate()
    path = tmp_path / "me.key"
    key.save(path)
    assert path.read_text() == f"# idlegrid secret key of {key.account}\n{key.seed.hex()}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        Key.generate().save(path)
    assert Key.load(path).seed == key.seed


def test_the_cli_and_the_client_agree_on_key_files(idlegrid_bin: Path, tmp_path: Path) -> None:
    """A key file `idlegrid wallet new` writes gives the CLI's did, and the CLI reads ours."""
    theirs = tmp_path / "cli.key"
    made = subprocess.run(
        [str(idlegrid_bin), "wallet", "--key", str(theirs), "new", "--json"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert Key.load(theirs).account == json.loads(made.stdout)["account"]
    ours = tmp_path / "ours.key"
    key = Key.generate()
    key.save(ours)
    address = subprocess.run(
        [str(idlegrid_bin), "wallet", "--key", str(ours), "address"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert address.stdout.decode().strip() == key.account
    again = subprocess.run(
        [str(idlegrid_bin), "wallet", "--key", str(ours), "new"], capture_output=True, timeout=60
    )
    assert again.returncode != 0 and Key.load(ours).seed == key.seed


# ---- transaction encoding ----

AGENT = Key(bytes([0x44] * 32))
TERMS: Dict[str, Any] = {
    "chain_id": "idlegrid-devnet",
    "nonce": 7,
    "fee": 1,
    "module": "b3:" + "11" * 32,
    "spec": "b3:" + "22" * 32,
    "escrow": 1000,
    "price_per_million_fuel": 3,
    "deadline_height": 600,
    "limits": {"fuel": 20_000_000, "memory_bytes": 256 << 20, "output_bytes": 1 << 20},
    "agent": account_text(bytes([0x33] * 32)),
}
HEADER_HEX = "0f000000" + b"idlegrid-devnet".hex() + "0700000000000000" + "0100000000000000"
OPEN_JOB_HEX = (
    HEADER_HEX
    + "03"
    + "11" * 32
    + "22" * 32
    + "e803000000000000"  # escrow 1000
    + "0300000000000000"  # price 3
    + "5802000000000000"  # deadline height 600
    + "002d310100000000"  # fuel 20 000 000
    + "0000001000000000"  # memory 256 MiB
    + "0000100000000000"  # output 1 MiB
    + "01"
    + "33" * 32  # Some(agent)
)


def test_open_job_byte_layout() -> None:
    encoded = tx.encode_open_job(TERMS)
    assert encoded.hex() == OPEN_JOB_HEX
    assert len(encoded) == 4 + 15 + 8 + 8 + 1 + 32 + 32 + 3 * 8 + 3 * 8 + 1 + 32


def test_open_job_without_agent() -> None:
    terms = dict(TERMS, agent=None)
    assert tx.encode_open_job(terms).hex() == OPEN_JOB_HEX[: -(2 + 64)] + "00"


def test_open_job_refuses_bad_terms() -> None:
    changes: List[Dict[str, Any]] = [
        {"escrow": -1},
        {"escrow": 1 << 64},
        {"escrow": "1000"},
        {"nonce": True},
        {"module": "b3:" + "AA" * 32},
        {"spec": "job:" + "22" * 32},
        {"chain_id": "x" * 65},
        {"agent": "did:key:nope"},
    ]
    for change in changes:
        with pytest.raises((ValueError, TypeError)):
            tx.encode_open_job(dict(TERMS, **change))
    with pytest.raises(KeyError):
        tx.encode_open_job({k: v for k, v in TERMS.items() if k != "limits"})


def test_transfer_and_close_job_layout() -> None:
    to = account_text(bytes([0x55] * 32))
    transfer = tx.encode_transfer("idlegrid-devnet", 7, 1, to, 1234)
    assert transfer.hex() == HEADER_HEX + "00" + "55" * 32 + "d204000000000000"
    close = tx.encode_close_job("idlegrid-devnet", 7, 1, "job:" + "66" * 32)
    assert close.hex() == HEADER_HEX + "06" + "66" * 32


def test_delegation_layouts() -> None:
    validator = account_text(bytes([0x77] * 32))
    delegate = tx.encode_delegate("idlegrid-devnet", 7, 1, validator, 1234)
    assert delegate.hex() == HEADER_HEX + "08" + "77" * 32 + "d204000000000000"
    undelegate = tx.encode_undelegate("idlegrid-devnet", 7, 1, validator, 1234)
    assert undelegate.hex() == HEADER_HEX + "09" + "77" * 32 + "d204000000000000"
    claim = tx.encode_claim_rewards("idlegrid-devnet", 7, 1, validator)
    assert claim.hex() == HEADER_HEX + "0a" + "77" * 32
    with pytest.raises(ValueError):
        tx.encode_delegate("idlegrid-devnet", 7, 1, "did:key:nope", 1)
    with pytest.raises(ValueError):
        tx.encode_undelegate("idlegrid-devnet", 7, 1, validator, -1)


def test_signed_transaction_layout() -> None:
    key = Key.from_hex(RFC_SEED)
    body = tx.encode_close_job("c", 0, 1, "job:" + "66" * 32)
    raw = tx.signed(body, key)
    assert raw[: len(body)] == body
    assert raw[len(body) : len(body) + 32] == key.public_key
    signature = raw[len(body) + 32 :]
    assert len(signature) == 64
    assert signature == key.sign(b"idlegrid transaction v1\x00" + body)
    assert verify_transaction(key.public_key, body, signature)
    assert not verify_transaction(key.public_key, body + b"x", signature)
    assert tx.transaction_hash(raw) == "b3:" + blake3(raw).hexdigest()


def test_job_id_is_the_ledgers() -> None:
    # A job the devnet's ledger opened for this requestor's transaction of nonce 0.
    requestor = "did:key:z6MkvZokt54ePUy8NkHgUzznyhEiM5PaET8wotF95q8KCuh6"
    assert tx.derive_job_id(requestor, 0) == (
        "job:c06d029d0808d6db114a368c967e68fa446b66fd9af7a02953f1b725c3aed973"
    )
    assert tx.derive_job_id(requestor, 1) != tx.derive_job_id(requestor, 0)


def test_id_text_round_trips() -> None:
    raw = os.urandom(32)
    assert tx.cid_bytes(tx.cid_text(raw)) == raw
    assert tx.job_id_bytes(tx.job_id_text(raw)) == raw
    assert tx.cid_of(b"abc") == "b3:" + blake3(b"abc").hexdigest()
    assert tx.is_cid(tx.cid_of(b""))
    for bad in ["b3:" + "0" * 63, "b3:" + "g" * 64, "job:" + "0" * 64, "", None]:
        assert not tx.is_cid(bad)
    with pytest.raises(ValueError):
        tx.job_id_bytes("b3:" + "0" * 64)


# ---- errors ----


def _body(code: str, message: str = "why") -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@pytest.mark.parametrize(
    "status, code, kind",
    [
        (401, "unauthorized", Unauthorized),
        (429, "quota_exceeded", QuotaExceeded),
        (413, "too_many_tasks", TooManyTasks),
        (404, "unknown_job", NotFound),
        (404, "unknown_blob", NotFound),
        (400, "invalid_job", InvalidJob),
        (400, "bad_signature", IdlegridError),
        (409, "already_signed", IdlegridError),
        (413, "payload_too_large", IdlegridError),
        (413, "upload_too_large", IdlegridError),
        (503, "unavailable", IdlegridError),
    ],
)
def test_error_mapping(status: int, code: str, kind: type) -> None:
    error = error_from_response(status, _body(code, "the reason"), {"Retry-After": "12"})
    assert type(error) is kind
    assert (error.status, error.code, error.message) == (status, code, "the reason")
    if isinstance(error, QuotaExceeded):
        assert error.retry_after == 12


def test_error_mapping_without_the_api_shape() -> None:
    error = error_from_response(502, b"<html>bad gateway</html>")
    assert type(error) is IdlegridError
    assert error.code == "http_502" and "bad gateway" in error.message
    assert isinstance(error_from_response(401, b""), Unauthorized)
    quota = error_from_response(429, b"{}")
    assert isinstance(quota, QuotaExceeded) and quota.retry_after is None


def test_retry_after_forms() -> None:
    assert parse_retry_after("30") == 30
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10


def test_every_error_is_an_idlegrid_error() -> None:
    for name in idlegrid.__all__:
        value = getattr(idlegrid, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, IdlegridError)


# ---- the event stream parser ----


def test_iter_sse() -> None:
    lines = [
        ": a comment",
        "event: progress",
        'data: {"a":',
        "data: 1}",
        "",
        "retry: 100",
        "",
        "data:plain",
        "",
        "event: end",
        "data: {}",
        "",
        "event: dropped",
        "data: unterminated",
    ]
    assert list(iter_sse(lines)) == [("progress", '{"a":\n1}'), ("message", "plain"), ("end", "{}")]


# ---- the client against the in-memory gateway ----

MODULE = b"\0asm\x01\0\0\0 a module"


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def client(gateway: FakeGateway) -> Client:
    return Client(
        "http://gateway.test/v1/", key=Key.from_hex(RFC_SEED), transport=gateway.transport()
    )


def test_blobs_round_trip_and_are_verified(client: Client, gateway: FakeGateway) -> None:
    cid = client.put_blob(b"some bytes")
    assert cid == tx.cid_of(b"some bytes")
    assert gateway.requests[-1].headers["content-type"] == "application/octet-stream"
    assert client.get_blob(cid) == b"some bytes"
    gateway.corrupt_blobs = True
    with pytest.raises(IdlegridError) as caught:
        client.get_blob(cid)
    assert caught.value.code == "corrupt_blob"
    with pytest.raises(NotFound):
        client.get_blob(tx.cid_of(b"never uploaded"))


def test_put_blob_checks_the_gateway_cid(gateway: FakeGateway) -> None:
    def lying(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"cid": tx.cid_of(b"other"), "bytes": 5})

    client = Client("http://gateway.test", transport=httpx.MockTransport(lying))
    with pytest.raises(IdlegridError) as caught:
        client.put_blob(b"mine")
    assert caught.value.code == "cid_mismatch"


def test_api_key_is_sent_and_a_wrong_one_is_unauthorized() -> None:
    gateway = FakeGateway(token="secret")
    good = Client("http://gateway.test", api_key="secret", transport=gateway.transport())
    assert good.put_blob(b"x") == tx.cid_of(b"x")
    assert gateway.requests[-1].headers["authorization"] == "Bearer secret"
    bad = Client("http://gateway.test", api_key="wrong", transport=gateway.transport())
    with pytest.raises(Unauthorized) as caught:
        bad.put_blob(b"y")
    assert caught.value.status == 401 and caught.value.code == "unauthorized"
    assert tx.cid_of(b"y") not in gateway.blobs


def test_upload_quota_gives_retry_after(client: Client, gateway: FakeGateway) -> None:
    gateway.quota_left = 10
    client.put_blob(b"0123456789")
    with pytest.raises(QuotaExceeded) as caught:
        client.put_blob(b"more")
    assert caught.value.retry_after == 7 and caught.value.status == 429


def test_submit_signs_exactly_the_checked_transaction(client: Client, gateway: FakeGateway) -> None:
    job = client.submit(
        MODULE,
        tasks=[["1", 2], {"args": ["x"], "stdin": "text"}, {"args": [], "stdin": b"\x00\x01"}],
        budget=500,
        price_per_million_fuel=2,
        fuel=1_000_000,
        memory_mib=64,
        output_bytes=4096,
        wall_time_secs=5,
        deadline_blocks=20,
        replicas=2,
    )
    record = gateway.jobs[job.id]
    assert record["signature"] is not None
    assert record["requestor"] == client.key.account  # type: ignore[union-attr]
    spec = record["spec"]
    assert spec["module"] == tx.cid_of(MODULE)
    assert spec["budget"] == 500 and spec["price_per_million_fuel"] == 2
    assert spec["deadline_blocks"] == 20
    assert spec["limits"] == {
        "fuel": 1_000_000,
        "memory_mib": 64,
        "output_bytes": 4096,
        "wall_time_secs": 5,
    }
    assert spec["verification"] == {"policy": "replicas", "replicas": 2}
    assert spec["task"][0] == {"args": ["1", "2"]}
    assert spec["task"][1] == {"args": ["x"], "stdin": "text"}
    assert spec["task"][2] == {"args": [], "stdin_file": tx.cid_of(b"\x00\x01")}
    assert gateway.blobs[spec["task"][2]["stdin_file"]] == b"\x00\x01"
    assert job.tasks == 3


def test_submit_task_forms(client: Client, gateway: FakeGateway) -> None:
    module_cid = client.put_blob(MODULE)
    job = client.submit(module_cid, tasks=5, budget=10)
    assert gateway.jobs[job.id]["spec"]["tasks"] == {"end": 5}
    job = client.submit(module_cid, tasks={"start": 3, "end": 7, "args": ["{index}", 9]}, budget=10)
    assert gateway.jobs[job.id]["spec"]["tasks"] == {"start": 3, "end": 7, "args": ["{index}", "9"]}
    assert job.tasks == 4
    with pytest.raises(ValueError):
        client.submit(module_cid, tasks=0, budget=10)
    with pytest.raises(TypeError):
        client.submit(module_cid, tasks=["not a list of args"], budget=10)


def test_submit_needs_a_key(gateway: FakeGateway) -> None:
    keyless = Client("http://gateway.test", transport=gateway.transport())
    with pytest.raises(ValueError):
        keyless.submit(MODULE, tasks=1, budget=10)


def _retamper(change: Dict[str, Any]) -> Any:
    """A tamper that changes the terms and re-encodes the transaction to match them."""

    def tamper(answer: Dict[str, Any]) -> Dict[str, Any]:
        for name, value in change.items():
            if name in answer["terms"]["limits"]:
                answer["terms"]["limits"][name] = value
            else:
                answer["terms"][name] = value
        answer["transaction"] = tx.encode_open_job(answer["terms"]).hex()
        return answer

    return tamper


def _flip_byte(answer: Dict[str, Any]) -> Dict[str, Any]:
    raw = bytearray.fromhex(answer["transaction"])
    raw[-40] ^= 0x01
    answer["transaction"] = raw.hex()
    return answer


def _other_agent(answer: Dict[str, Any]) -> Dict[str, Any]:
    answer["agent"] = account_text(bytes([9] * 32))
    return answer


def _no_terms(answer: Dict[str, Any]) -> Dict[str, Any]:
    del answer["terms"]
    return answer


@pytest.mark.parametrize(
    "tamper, says",
    [
        (_retamper({"escrow": 501}), "escrow"),
        (_retamper({"price_per_million_fuel": 3}), "price"),
        (_retamper({"module": "b3:" + "ab" * 32}), "module"),
        (_retamper({"fuel": 2_000_000}), "fuel"),
        (_retamper({"memory_bytes": 1 << 30}), "memory"),
        (_retamper({"fee": 1_000_000}), "fee"),
        (_retamper({"agent": account_text(bytes([7] * 32))}), "agent"),
        (_retamper({"agent": None}), "agent"),
        (_flip_byte, "not the OpenJob"),
        (_other_agent, "agent"),
        (_no_terms, "no terms"),
        (lambda a: dict(a, tasks=a["tasks"] + 1), "number of tasks"),
        (lambda a: dict(a, transaction="zz"), "not hex"),
    ],
)
def test_a_changed_transaction_is_not_signed(
    client: Client, gateway: FakeGateway, tamper: Any, says: str
) -> None:
    gateway.tamper = tamper
    with pytest.raises(UnsafeTransaction) as caught:
        client.submit(MODULE, tasks=2, budget=500, fuel=1_000_000, memory_mib=64)
    assert says in str(caught.value)
    assert not [p for p in gateway.paths("POST") if p.endswith("/signature")]
    assert all(job["signature"] is None for job in gateway.jobs.values())


def test_check_open_job_accepts_the_right_answer() -> None:
    answer = {
        "job": "job:" + "aa" * 32,
        "tasks": 4,
        "agent": TERMS["agent"],
        "transaction": OPEN_JOB_HEX,
        "terms": TERMS,
    }

    def check(**extra: Any) -> List[str]:
        return check_open_job(
            answer, module=TERMS["module"], budget=1000, price_per_million_fuel=3, tasks=4, **extra
        )

    assert check(fuel=20_000_000, memory_bytes=256 << 20, output_bytes=1 << 20, max_fee=1) == []
    assert check(max_fee=0) == ["the fee is 1, more than 0"]
    assert check(fuel=1) == ["the fuel limit is 20000000, asked for 1"]


def test_prepare_leaves_the_job_unsigned(client: Client, gateway: FakeGateway) -> None:
    prepared = client.prepare(MODULE, tasks=2, budget=100)
    assert gateway.jobs[prepared.id]["signature"] is None
    assert prepared.terms["escrow"] == 100 and prepared.tasks == 2
    job = client.sign(prepared)
    assert gateway.jobs[job.id]["signature"] is not None
    with pytest.raises(IdlegridError) as caught:
        client.sign(prepared)
    assert caught.value.code == "already_signed" and caught.value.status == 409


def test_results_yield_then_budget_exhausted(client: Client, gateway: FakeGateway) -> None:
    gateway.page_limit = 2
    job = client.submit(MODULE, tasks=5, budget=10)
    gateway.finish(job.id, {0: b"zero", 1: b"one", 2: b"two"}, budget_exhausted=True)
    seen: List[idlegrid.Result] = []
    with pytest.raises(BudgetExhausted) as caught:
        for result in job.results(timeout=10):
            seen.append(result)
    assert [r.index for r in seen] == [0, 1, 2]
    assert [r.data for r in seen] == [b"zero", b"one", b"two"]
    assert [r.index for r in caught.value.results] == [0, 1, 2]
    assert caught.value.code == "budget_exhausted"


def test_results_raise_job_failed(client: Client, gateway: FakeGateway) -> None:
    job = client.submit(MODULE, tasks=2, budget=10)
    gateway.finish(
        job.id,
        {},
        status="failed",
        error={"code": "insufficient_balance", "message": "the balance is 0"},
    )
    with pytest.raises(JobFailed) as caught:
        list(job.results(timeout=10))
    assert caught.value.code == "insufficient_balance"
    assert "the balance is 0" in caught.value.message


def test_outputs_keep_the_latest_entry(client: Client, gateway: FakeGateway) -> None:
    job = client.submit(MODULE, tasks=2, budget=10)
    gateway.finish(job.id, {0: b"first", 1: b"one"})
    record = gateway.jobs[job.id]
    rechecked = dict(record["results"][0], output=tx.cid_of(b"second"), bytes=6, rechecked=True)
    gateway.blobs[tx.cid_of(b"second")] = b"second"
    record["results"].append(rechecked)
    assert job.outputs(timeout=10) == {0: b"second", 1: b"one"}
    gateway.corrupt_blobs = True
    result = next(iter(client.job(job.id).results(timeout=10)))
    with pytest.raises(IdlegridError):
        result.read()


def test_results_time_out_while_the_job_runs(client: Client, gateway: FakeGateway) -> None:
    job = client.submit(MODULE, tasks=2, budget=10)
    with pytest.raises(TimeoutError):
        list(job.results(timeout=0.5, poll_interval=0.1))


def test_wait_follows_the_event_stream(client: Client, gateway: FakeGateway) -> None:
    job = client.submit(MODULE, tasks=2, budget=10)
    running = dict(gateway.jobs[job.id]["view"], status="running", accepted=1)
    final = dict(running, status="finished", accepted=2)
    gateway.events_body = (
        f"event: progress\ndata: {json.dumps(running)}\n\n"
        f": keep-alive\n\nevent: end\ndata: {json.dumps(final)}\n\n"
    ).encode()
    assert job.wait(timeout=10, progress=True) == final
    assert len([p for p in gateway.paths("GET") if p.endswith("/progress")]) == 1
    assert [p for p in gateway.paths("GET") if p.endswith("/events")]


def test_wait_falls_back_to_polling(client: Client, gateway: FakeGateway) -> None:
    job = client.submit(MODULE, tasks=2, budget=10)
    gateway.finish(job.id, {0: b"a", 1: b"b"})
    gateway.events_body = b"event: progress\ndata: {broken json\n\n"
    view = job.wait(timeout=10)
    assert view["status"] == "finished"
    assert [p for p in gateway.paths("GET") if p.endswith("/progress")]
    gateway.events_body = None  # no stream at all: polling alone
    assert job.wait(timeout=10)["status"] == "finished"


def test_wait_times_out(client: Client, gateway: FakeGateway) -> None:
    job = client.submit(MODULE, tasks=2, budget=10)
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.6)


def test_job_reattaches_and_unknown_jobs_are_not_found(
    client: Client, gateway: FakeGateway
) -> None:
    job = client.submit(MODULE, tasks=3, budget=10)
    again = client.job(job.id)
    assert again.id == job.id and again.tasks == 3
    with pytest.raises(NotFound):
        client.job("job:" + "00" * 32)
    with pytest.raises(ValueError):
        client.job("b3:" + "00" * 32)
