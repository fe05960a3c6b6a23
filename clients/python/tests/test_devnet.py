"""The client against a real local devnet (`idlegrid devnet`), through the gateway's job API."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import httpx
import pytest
from conftest import FILESUM, MANDELBROT, Devnet, exec_fuel, exec_output, filesum_line

from idlegrid import (
    BudgetExhausted,
    Client,
    IdlegridError,
    Key,
    NotFound,
    QuotaExceeded,
    TooManyTasks,
    TransactionRejected,
    Unauthorized,
    UnsafeTransaction,
    tx,
)

pytestmark = pytest.mark.devnet

#: A 128x128 image in four 64-pixel tiles at 200 iterations: a few million fuel per tile.
IMAGE, TILE, ITERATIONS = 128, 64, 200
TILES = [(x, y) for y in range(2) for x in range(2)]
#: Fuel limit per task (above every tile's fuel); the market reserves its cost per placement.
FUEL_LIMIT = 20_000_000


def tile_args(x: int, y: int) -> List[str]:
    """The Mandelbrot module's arguments for one tile of the test image."""
    return [str(IMAGE), str(IMAGE), str(x), str(y), str(TILE), str(ITERATIONS)]


def ppm_size(data: bytes) -> Tuple[int, int]:
    """Width and height of a binary PPM (P6, maxval 255); fails on anything else."""
    assert data.startswith(b"P6\n"), data[:20]
    header, _, rest = data[3:].partition(b"\n")
    width, height = (int(v) for v in header.split())
    maxval, _, pixels = rest.partition(b"\n")
    assert maxval == b"255"
    assert len(pixels) == width * height * 3
    return width, height


@pytest.fixture(scope="session")
def tile_outputs(idlegrid_bin: Path) -> Dict[Tuple[int, int], bytes]:
    """What `idlegrid exec` prints for each tile."""
    return {tile: exec_output(idlegrid_bin, MANDELBROT, tile_args(*tile)) for tile in TILES}


@pytest.fixture
def client(devnet: Devnet) -> Iterator[Client]:
    with Client(devnet.url, key=devnet.requestor_key) as c:
        yield c


def wait_for_height(client: Client, height: int, timeout: float = 90.0) -> None:
    """Polls the chain until it is past `height`."""
    deadline = time.monotonic() + timeout
    while client.status()["height"] <= height:
        assert time.monotonic() < deadline, f"the chain did not pass height {height} in {timeout} s"
        time.sleep(0.25)


# ---- transactions (the ledger's API, through the gateway) ----


def test_a_transfer_encoded_and_signed_here_moves_tokens(devnet: Devnet, client: Client) -> None:
    receiver = Key.generate()
    status = client.status()
    before = client.account()
    body = tx.encode_transfer(
        status["chain_id"], before["next_nonce"], status["minimum_fee"], receiver.account, 1234
    )
    raw = tx.signed(body, client.key)  # type: ignore[arg-type]
    answer = httpx.post(
        f"{devnet.url}/v1/transactions", json={"transaction": raw.hex()}, timeout=30
    )
    assert answer.status_code < 300, answer.text
    assert answer.json()["hash"] == tx.transaction_hash(raw)
    view = client.wait_transaction(answer.json()["hash"], timeout=60)
    assert view["status"] == "included"
    assert client.account(receiver.account)["balance"] == 1234
    after = client.account()
    assert after["nonce"] >= before["next_nonce"] + 1
    assert after["balance"] <= before["balance"] - 1234 - status["minimum_fee"]


def test_transfer_helper_and_a_rejected_transaction(client: Client) -> None:
    receiver = Key.generate()
    assert client.transfer(receiver.account, 77, timeout=60)["status"] == "included"
    assert client.account(receiver.account)["balance"] == 77
    with Client(client.url, key=receiver) as poor:
        with pytest.raises(IdlegridError) as caught:
            poor.transfer(Key.generate().account, 1_000_000, timeout=60)
    assert caught.value.code == "insufficient_balance"


def test_delegate_to_the_validator_and_undelegate(client: Client) -> None:
    """A fresh account delegates to the devnet's validator, sees it, and undelegates part."""
    validators = client.validators()["validators"]
    validator = next(entry for entry in validators if entry["in_set"])["account"]
    delegator = Key.generate()
    client.transfer(delegator.account, 50_000, timeout=60)
    with Client(client.url, key=delegator) as own:
        assert own.delegate(validator, 30_000, timeout=60)["status"] == "included"
        view = own.delegations()
        assert view["account"] == delegator.account
        [delegation] = view["delegations"]
        assert (delegation["validator"], delegation["stake"]) == (validator, 30_000)
        listed = next(e for e in own.validators()["validators"] if e["account"] == validator)
        assert listed["delegated"] >= 30_000 and listed["delegators"] >= 1
        assert own.undelegate(validator, 10_000, timeout=60)["status"] == "included"
        [delegation] = own.delegations()["delegations"]
        assert delegation["stake"] == 20_000
        assert sum(entry["amount"] for entry in delegation["unbonding"]) == 10_000
        # Claiming pays what it earned, or is refused if an epoch has not
        # ended since it delegated.
        try:
            assert own.claim_rewards(validator, timeout=60)["status"] == "included"
        except IdlegridError as error:
            assert error.code == "no_rewards"
        with pytest.raises(IdlegridError) as caught:
            own.delegate(Key.generate().account, 1, timeout=60)
        assert caught.value.code == "not_a_validator"


def test_close_job_encoding_reaches_the_ledger(client: Client) -> None:
    """A CloseJob for a job that does not exist decodes and is refused for that reason."""
    with pytest.raises(IdlegridError) as caught:
        client.close_job("job:" + "ab" * 32, timeout=60)
    assert caught.value.code == "unknown_job"


def test_open_and_close_a_job_directly_on_the_ledger(client: Client) -> None:
    """An OpenJob built here (no agent) opens the job the derived id names; CloseJob ends it."""
    status = client.status()
    terms = {
        "chain_id": status["chain_id"],
        "nonce": client.account()["next_nonce"],
        "fee": status["minimum_fee"],
        "module": tx.cid_of(MANDELBROT.read_bytes()),
        "spec": tx.cid_of(b"a spec nobody runs"),
        "escrow": 100,
        "price_per_million_fuel": 1,
        "deadline_height": status["height"] + 30,
        "limits": {"fuel": FUEL_LIMIT, "memory_bytes": 64 << 20, "output_bytes": 1 << 20},
        "agent": None,
    }
    opened = client.wait_transaction(client.send_transaction(tx.encode_open_job(terms)), 60)
    assert opened["status"] == "included"
    job_id = tx.derive_job_id(client.key.account, terms["nonce"])  # type: ignore[union-attr]
    on_ledger = httpx.get(f"{client.url}/v1/jobs/{job_id}", timeout=30).json()
    assert on_ledger["escrow"] == 100 and on_ledger["status"] == "open"
    assert on_ledger["requestor"] == client.key.account  # type: ignore[union-attr]
    wait_for_height(client, terms["deadline_height"])
    assert client.close_job(job_id, timeout=60)["status"] == "included"
    assert httpx.get(f"{client.url}/v1/jobs/{job_id}", timeout=30).json()["status"] != "open"


# ---- jobs ----


def test_mandelbrot_tiles_match_local_execution(
    client: Client, tile_outputs: Dict[Tuple[int, int], bytes]
) -> None:
    job = client.submit(
        MANDELBROT,
        tasks=[tile_args(x, y) for x, y in TILES],
        budget=len(TILES) * 3 * FUEL_LIMIT // 1_000_000,
        price_per_million_fuel=1,
        fuel=FUEL_LIMIT,
    )
    assert job.id.startswith("job:") and job.tasks == len(TILES)
    seen: Dict[int, bytes] = {}
    for result in job.results(timeout=90):
        assert result.status == "accepted", result
        assert result.exit_code == 0 and result.providers
        assert result.fuel is not None and 0 < result.fuel <= FUEL_LIMIT
        seen[result.index] = result.data
    assert sorted(seen) == list(range(len(TILES)))
    for index, data in seen.items():
        assert data == tile_outputs[TILES[index]]
        assert ppm_size(data) == (TILE, TILE)
    final = job.wait(timeout=30)
    assert final["status"] == "finished" and not final["budget_exhausted"]
    assert final["accepted"] == len(TILES) and final["tasks_total"] == len(TILES)
    assert 0 < final["paid"] <= final["budget"]
    assert job.outputs(timeout=30) == seen


def test_input_files_shared_and_per_task_reach_the_tasks(client: Client) -> None:
    shared = bytes((i * 7 + i // 251) % 256 for i in range(200_000))
    owns = [bytes((i * (k + 3)) % 256 for i in range(16_384)) for k in range(3)]
    job = client.submit(
        FILESUM,
        tasks=[{"files": {"own.bin": own}} for own in owns],
        files={"shared.bin": shared},
        budget=3 * 3 * FUEL_LIMIT // 1_000_000,
        fuel=FUEL_LIMIT,
    )
    outputs = job.outputs(timeout=90)
    assert sorted(outputs) == [0, 1, 2]
    for index, own in enumerate(owns):
        assert outputs[index] == filesum_line(own, shared), index


def test_reconnect_and_collect_every_result(
    devnet: Devnet, tile_outputs: Dict[Tuple[int, int], bytes]
) -> None:
    first = Client(devnet.url, key=devnet.requestor_key)
    job = first.submit(
        MANDELBROT,
        tasks=[tile_args(x, y) for x, y in TILES],
        budget=len(TILES) * 3 * FUEL_LIMIT // 1_000_000,
        fuel=FUEL_LIMIT,
    )
    feed = job.results(timeout=90)
    one = next(feed)
    feed.close()
    first.close()
    with Client(devnet.url, key=Key.load(devnet.requestor_key)) as second:
        again = second.job(job.id)
        assert again.tasks == len(TILES)
        results = list(again.results(timeout=90))
        latest = {r.index: r for r in results}
        assert sorted(latest) == list(range(len(TILES)))
        assert one.index in latest and latest[one.index].output == one.output
        for index, result in latest.items():
            assert result.accepted and result.data == tile_outputs[TILES[index]]


def test_budget_runs_out_after_some_results(client: Client, idlegrid_bin: Path) -> None:
    args = tile_args(1, 0)
    fuel = exec_fuel(idlegrid_bin, MANDELBROT, args)
    limit = (fuel // 1_000_000 + 2) * 1_000_000
    cost = -(-fuel // 1_000_000)  # paid per task at 1 token per million fuel, rounded up
    reserve = limit // 1_000_000  # reserved per placement
    # The market reserves `reserve` per task it places and places none the
    # budget cannot cover at that; placed tasks finish and are paid at their
    # cost, which leaves room for more. A budget of sixteen reserves thus
    # pays for at most 16 * reserve / cost (20) of the 40 tasks, and at
    # least its first round.
    tasks = 40
    budget = 16 * reserve
    assert budget < tasks * cost
    expected = exec_output(idlegrid_bin, MANDELBROT, args)
    job = client.submit(MANDELBROT, tasks=[args] * tasks, budget=budget, fuel=limit, replicas=1)
    accepted: List[int] = []
    with pytest.raises(BudgetExhausted) as caught:
        for result in job.results(timeout=90):
            if result.accepted:
                assert result.data == expected
                accepted.append(result.index)
    assert 1 <= len(set(accepted)) < tasks
    assert [r.index for r in caught.value.results if r.accepted] == accepted
    view = job.progress()
    assert view["status"] == "finished" and view["budget_exhausted"]
    assert view["paid"] <= budget and view["accepted"] < tasks


def test_close_job_after_its_deadline(client: Client) -> None:
    prepared = client.prepare(
        MANDELBROT,
        tasks=[tile_args(0, 0)],
        budget=3 * FUEL_LIMIT // 1_000_000,
        fuel=FUEL_LIMIT,
        deadline_blocks=40,  # a few seconds of devnet blocks
    )
    # The gateway's job id is the ledger's: derived from the requestor and the OpenJob's nonce.
    assert prepared.id == tx.derive_job_id(client.key.account, prepared.terms["nonce"])  # type: ignore[union-attr]
    job = client.sign(prepared)
    assert job.wait(timeout=60)["status"] == "finished"
    wait_for_height(client, int(prepared.terms["deadline_height"]))
    try:
        view = client.close_job(job.id, timeout=60)
    except TransactionRejected as rejected:  # its agent may have closed it first
        assert rejected.code == "job_closed", rejected
    else:
        assert view["status"] == "included"


# ---- a keyed gateway ----


def keyed(devnet: Devnet, name: str, key: Any = None) -> Client:
    """A client of the keyed devnet with API key `name` (and the requestor's key by default)."""
    return Client(devnet.url, key=key or devnet.requestor_key, api_key=devnet.api_keys[name])


def funded_key(devnet: Devnet, amount: int = 10_000) -> Key:
    """A fresh account with `amount` from the requestor.

    A job's id follows from its requestor and nonce, so a requestor has one
    unsigned job at a time: tests that leave jobs unsigned use their own.
    """
    fresh = Key.generate()
    api_key = devnet.api_keys.get("main")
    with Client(devnet.url, key=devnet.requestor_key, api_key=api_key) as payer:
        payer.transfer(fresh.account, amount, timeout=60)
    return fresh


def test_a_wrong_api_key_is_unauthorized_and_creates_nothing(keyed_devnet: Devnet) -> None:
    with keyed(keyed_devnet, "main") as good:
        module = good.put_blob(MANDELBROT.read_bytes())
        for token in ["not-a-key", None]:
            with Client(keyed_devnet.url, key=keyed_devnet.requestor_key, api_key=token) as bad:
                data = os.urandom(256)
                with pytest.raises(Unauthorized) as caught:
                    bad.put_blob(data)
                assert caught.value.status == 401 and caught.value.code == "unauthorized"
                with pytest.raises(NotFound):
                    good.get_blob(tx.cid_of(data))
                with pytest.raises(Unauthorized):
                    bad.get_blob(module)
                with pytest.raises(Unauthorized):
                    bad.submit(module, tasks=1, budget=60, fuel=FUEL_LIMIT, max_fee=10)


def test_upload_quota(keyed_devnet: Devnet) -> None:
    with keyed(keyed_devnet, "tiny-upload") as tiny:
        tiny.put_blob(os.urandom(1000))  # exactly the hour's allowance
        with pytest.raises(QuotaExceeded) as caught:
            tiny.put_blob(os.urandom(1000))
    assert caught.value.status == 429 and caught.value.code == "quota_exceeded"
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    with keyed(keyed_devnet, "main") as other:  # quotas are per key
        other.put_blob(os.urandom(1000))


def test_jobs_at_once_quota(keyed_devnet: Devnet) -> None:
    first_requestor, second_requestor = funded_key(keyed_devnet), funded_key(keyed_devnet)
    with keyed(keyed_devnet, "one-job", first_requestor) as one:
        module = one.put_blob(MANDELBROT.read_bytes())
        first = one.prepare(module, tasks=1, budget=60, fuel=FUEL_LIMIT)
    with keyed(keyed_devnet, "one-job", second_requestor) as again:  # the same API key
        with pytest.raises(QuotaExceeded) as caught:
            again.prepare(module, tasks=1, budget=60, fuel=FUEL_LIMIT)
        assert caught.value.status == 429 and caught.value.code == "quota_exceeded"
        assert caught.value.retry_after is not None
        assert again.job(first.id).progress()["status"] == "unsigned"


def test_tasks_per_job_and_private_jobs(keyed_devnet: Devnet) -> None:
    requestor = funded_key(keyed_devnet)
    with keyed(keyed_devnet, "few-tasks", requestor) as few, keyed(keyed_devnet, "main") as other:
        module = few.put_blob(MANDELBROT.read_bytes())
        with pytest.raises(TooManyTasks) as caught:
            few.prepare(module, tasks=3, budget=60, fuel=FUEL_LIMIT)
        assert caught.value.status == 413 and caught.value.code == "too_many_tasks"
        mine = few.prepare(module, tasks=2, budget=60, fuel=FUEL_LIMIT)
        assert few.job(mine.id).progress()["status"] == "unsigned"
        with pytest.raises(NotFound) as hidden:
            other.job(mine.id)
        assert hidden.value.code == "unknown_job"


# ---- the client refuses a transaction that is not its job ----


class Tampering(httpx.HTTPTransport):
    """Passes requests on, changing the answer to `POST /v1/jobs`; records every request."""

    def __init__(self, tamper: Callable[[Dict[str, Any]], Dict[str, Any]]) -> None:
        super().__init__()
        self.tamper = tamper
        self.paths: List[str] = []
        self.job = ""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(f"{request.method} {request.url.path}")
        response = super().handle_request(request)
        if (
            request.method == "POST"
            and request.url.path == "/v1/jobs"
            and response.status_code == 201
        ):
            answer = json.loads(response.read())
            self.job = answer["job"]
            return httpx.Response(201, json=self.tamper(answer))
        return response


def _more_escrow(answer: Dict[str, Any]) -> Dict[str, Any]:
    answer["terms"]["escrow"] += 1
    answer["transaction"] = tx.encode_open_job(answer["terms"]).hex()
    return answer


def _other_bytes(answer: Dict[str, Any]) -> Dict[str, Any]:
    raw = bytearray.fromhex(answer["transaction"])
    raw[-45] ^= 0x10  # a field near the end: terms and bytes now disagree
    answer["transaction"] = raw.hex()
    return answer


@pytest.mark.parametrize(
    "tamper, problem",
    [(_more_escrow, "the escrow is 61, asked for 60"), (_other_bytes, "not the OpenJob")],
)
def test_a_changed_transaction_is_never_signed(
    devnet: Devnet, tamper: Callable[[Dict[str, Any]], Dict[str, Any]], problem: str
) -> None:
    fresh = funded_key(devnet)  # the job stays unsigned: not the requestor's
    transport = Tampering(tamper)
    with Client(devnet.url, key=fresh, transport=transport) as fooled:
        with pytest.raises(UnsafeTransaction) as caught:
            fooled.submit(MANDELBROT, tasks=1, budget=60, fuel=FUEL_LIMIT)
    # Only the change is found: the untouched answer re-encodes to the gateway's bytes.
    assert len(caught.value.problems) == 1 and problem in caught.value.problems[0]
    assert transport.job and not [p for p in transport.paths if p.endswith("/signature")]
    with Client(devnet.url, key=fresh) as honest:
        assert honest.job(transport.job).progress()["status"] == "unsigned"
