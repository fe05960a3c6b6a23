"""The gateway client: blobs, jobs, results and transactions over HTTP."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import httpx
from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

from ._version import __version__
from .errors import (
    BudgetExhausted,
    IdlegridError,
    JobFailed,
    TransactionRejected,
    UnsafeTransaction,
    error_from_response,
)
from .keys import Key
from .tx import (
    cid_of,
    encode_claim_rewards,
    encode_close_job,
    encode_delegate,
    encode_open_job,
    encode_transfer,
    encode_undelegate,
    is_cid,
    job_id_bytes,
    signed,
)

__all__ = [
    "BLOB_BYTES_MAX",
    "Client",
    "Job",
    "PreparedJob",
    "Result",
    "check_open_job",
    "iter_sse",
]

#: Largest blob the gateway takes.
BLOB_BYTES_MAX = 8 << 20
#: A job's statuses after which nothing changes.
FINAL_STATUSES = ("finished", "failed")
#: How many times the chain's minimum fee the client signs for, unless told.
DEFAULT_FEE_FACTOR = 10

PathLike = Union[str, "os.PathLike[str]"]
TaskEntry = Union[Sequence[Any], Mapping[str, Any]]
Tasks = Union[int, Mapping[str, Any], Sequence[TaskEntry]]


@dataclass
class Result:
    """One entry of a job's results feed; `data`/`read()` fetch its verified output."""

    index: int
    status: str
    output: Optional[str]
    exit_code: Optional[int]
    fuel: Optional[int]
    error: Optional[str]
    providers: List[str]
    size: Optional[int] = None
    verified: str = ""
    rechecked: bool = False
    _client: Optional["Client"] = field(default=None, repr=False, compare=False)
    _data: Optional[bytes] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_json(cls, entry: Mapping[str, Any], client: Optional["Client"] = None) -> "Result":
        """A result from one entry of `GET /v1/jobs/{job}/results`."""
        return cls(
            index=int(entry["index"]),
            status=str(entry["status"]),
            output=entry.get("output"),
            exit_code=entry.get("exit_code"),
            fuel=entry.get("fuel"),
            error=entry.get("error"),
            providers=list(entry.get("providers") or []),
            size=entry.get("bytes"),
            verified=str(entry.get("verified") or ""),
            rechecked=bool(entry.get("rechecked", False)),
            _client=client,
        )

    @property
    def accepted(self) -> bool:
        """Whether the task's result was accepted."""
        return self.status == "accepted"

    def read(self) -> bytes:
        """The task's output, fetched once and checked against its content id."""
        if self._data is None:
            if self.output is None:
                raise IdlegridError(
                    None, "no_output", f"task {self.index} has no output ({self.status})"
                )
            if self._client is None:
                raise IdlegridError(None, "no_client", "this result is not attached to a client")
            data = self._client.get_blob(self.output)
            if self.size is not None and len(data) != self.size:
                raise IdlegridError(
                    None,
                    "corrupt_blob",
                    f"output {self.output} has {len(data)} bytes, the result says {self.size}",
                )
            self._data = data
        return self._data

    @property
    def data(self) -> bytes:
        """The task's output (see `read`)."""
        return self.read()


@dataclass
class PreparedJob:
    """A job the gateway created and the client checked, not yet signed."""

    id: str
    tasks: int
    agent: Optional[str]
    transaction: bytes
    terms: Dict[str, Any]
    answer: Dict[str, Any]


class _Bar:
    """A tqdm bar of decided tasks, or nothing when disabled."""

    def __init__(self, enabled: bool, total: Optional[int], desc: str) -> None:
        self._bar: Optional[Any] = (
            tqdm(total=total, desc=desc, unit="task", dynamic_ncols=True) if enabled else None
        )

    def show(self, done: int, total: Optional[int] = None, **postfix: Any) -> None:
        if self._bar is None:
            return
        if total is not None and self._bar.total != total:
            self._bar.total = total
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(done - self._bar.n)

    def view(self, view: Mapping[str, Any]) -> None:
        """Shows a progress view: accepted and failed of tasks_total."""
        self.show(
            int(view.get("accepted", 0)) + int(view.get("failed", 0)),
            view.get("tasks_total"),
            failed=view.get("failed", 0),
            in_flight=view.get("in_flight", 0),
            paid=view.get("paid", 0),
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def iter_sse(lines: Iterable[str]) -> Iterator[Tuple[str, str]]:
    """(event, data) pairs of a text/event-stream given line by line."""
    event = ""
    data: List[str] = []
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else deadline - time.monotonic()


def _deadline(timeout: Optional[float]) -> Optional[float]:
    return None if timeout is None else time.monotonic() + timeout


class Job:
    """A job on a gateway: its progress, its results and their outputs."""

    def __init__(
        self, client: "Client", job_id: str, *, tasks: Optional[int] = None, progress: bool = False
    ) -> None:
        job_id_bytes(job_id)
        self.client = client
        self.id = job_id
        self.tasks = tasks
        self.show_progress = progress

    def __repr__(self) -> str:
        return f"Job({self.id})"

    def _path(self, what: str) -> str:
        return f"/v1/jobs/{self.id}/{what}"

    def progress(self) -> Dict[str, Any]:
        """The job's progress view."""
        return self.client._json("GET", self._path("progress"))

    def wait(
        self, timeout: Optional[float] = None, progress: Optional[bool] = None
    ) -> Dict[str, Any]:
        """Follows the job until it is finished or failed; returns the final progress view.

        Reads the job's event stream, and polls its progress every 0.5 s if
        the stream breaks. Raises TimeoutError after `timeout` seconds.
        """
        deadline = _deadline(timeout)
        enabled = self.show_progress if progress is None else progress
        bar = _Bar(enabled, self.tasks, self.id[:16])
        try:
            first = self.progress()
            bar.view(first)
            if first.get("status") in FINAL_STATUSES:
                return first
            view = self._follow_events(deadline, bar)
            while view is None or view.get("status") not in FINAL_STATUSES:
                view = self.progress()
                bar.view(view)
                if view.get("status") in FINAL_STATUSES:
                    break
                left = _remaining(deadline)
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"job {self.id} is still {view.get('status')} after {timeout} s"
                    )
                time.sleep(0.5 if left is None else min(0.5, left))
            return view
        finally:
            bar.close()

    def _follow_events(self, deadline: Optional[float], bar: _Bar) -> Optional[Dict[str, Any]]:
        """The final view from the event stream, or None when the stream broke first."""
        left = _remaining(deadline)
        read_timeout = 60.0 if left is None else max(0.05, min(60.0, left))
        timeout = httpx.Timeout(self.client.timeout, read=read_timeout)
        try:
            with self.client._http.stream(
                "GET",
                self._path("events"),
                headers={"Accept": "text/event-stream"},
                timeout=timeout,
            ) as response:
                if response.status_code >= 300:
                    return None  # polling the progress view reports the error, if any
                for event, data in iter_sse(response.iter_lines()):
                    if event not in ("progress", "end"):
                        continue
                    view = json.loads(data)
                    if not isinstance(view, dict):
                        return None
                    bar.view(view)
                    if event == "end" or view.get("status") in FINAL_STATUSES:
                        return view
                    left = _remaining(deadline)
                    if left is not None and left <= 0:
                        return None
        except (httpx.TransportError, httpx.StreamError, ValueError):
            return None
        return None

    def results(
        self,
        timeout: Optional[float] = None,
        progress: Optional[bool] = None,
        poll_interval: float = 0.3,
    ) -> Generator[Result, None, None]:
        """Yields the job's results as they are decided, in the feed's order.

        A task checked again appears again (the later entry replaces the
        earlier). When the feed is complete, raises JobFailed if the job
        failed and BudgetExhausted if it stopped for lack of budget (after
        yielding everything that was verified). TimeoutError after `timeout`.
        """
        deadline = _deadline(timeout)
        enabled = self.show_progress if progress is None else progress
        bar = _Bar(enabled, self.tasks, self.id[:16])
        after = 0
        limit = 1000
        yielded: List[Result] = []
        decided: Set[int] = set()
        try:
            while True:
                page = self.client._json(
                    "GET", self._path("results"), params={"after": after, "limit": limit}
                )
                entries = page.get("results") or []
                for entry in entries:
                    result = Result.from_json(entry, self.client)
                    yielded.append(result)
                    decided.add(result.index)
                    bar.show(len(decided))
                    yield result
                after = int(page.get("next", after + len(entries)))
                if page.get("complete"):
                    break
                if len(entries) >= limit:
                    continue
                left = _remaining(deadline)
                if left is not None and left <= 0:
                    raise TimeoutError(f"job {self.id}: results incomplete after {timeout} s")
                time.sleep(poll_interval if left is None else min(poll_interval, left))
        finally:
            bar.close()
        view = self.progress()
        if view.get("status") == "failed":
            error = view.get("error") or {}
            raise JobFailed(
                self.id, str(error.get("code") or "failed"), str(error.get("message") or "")
            )
        if view.get("budget_exhausted"):
            raise BudgetExhausted(self.id, view, yielded)

    def outputs(
        self, timeout: Optional[float] = None, progress: Optional[bool] = None
    ) -> Dict[int, bytes]:
        """Index -> output of every task whose latest result is accepted.

        Raises what `results()` raises; BudgetExhausted carries the results.
        """
        latest: Dict[int, Result] = {}
        for result in self.results(timeout=timeout, progress=progress):
            latest[result.index] = result
        return {index: r.read() for index, r in sorted(latest.items()) if r.accepted}

    def close(self, timeout: float = 60.0) -> Dict[str, Any]:
        """Closes the job on the ledger (after its deadline), refunding what is left."""
        return self.client.close_job(self.id, timeout=timeout)


def check_open_job(
    answer: Mapping[str, Any],
    *,
    module: str,
    budget: int,
    price_per_million_fuel: int,
    tasks: Optional[int] = None,
    fuel: Optional[int] = None,
    memory_bytes: Optional[int] = None,
    output_bytes: Optional[int] = None,
    max_fee: Optional[int] = None,
) -> List[str]:
    """What is wrong with a `POST /v1/jobs` answer, given what was asked (empty: safe to sign).

    The transaction must be exactly the OpenJob its terms describe, and the
    terms must be the module, budget, price and limits asked for, with the
    answer's agent; the fee at most `max_fee`.
    """
    problems: List[str] = []
    terms = answer.get("terms")
    if not isinstance(terms, Mapping):
        return ["the answer has no terms"]
    try:
        transaction = bytes.fromhex(str(answer.get("transaction")))
    except ValueError:
        return ["the transaction is not hex"]
    try:
        expected = encode_open_job(terms)
    except (KeyError, TypeError, ValueError) as error:
        problems.append(f"the terms do not describe an OpenJob ({error})")
    else:
        if expected != transaction:
            problems.append("the transaction is not the OpenJob of the terms")
    raw_limits = terms.get("limits")
    limits: Mapping[str, Any] = raw_limits if isinstance(raw_limits, Mapping) else {}

    def differs(what: str, got: Any, want: Any) -> None:
        if got != want:
            problems.append(f"{what} is {got!r}, asked for {want!r}")

    differs("the module", terms.get("module"), module)
    differs("the escrow", terms.get("escrow"), budget)
    differs(
        "the price per million fuel", terms.get("price_per_million_fuel"), price_per_million_fuel
    )
    if fuel is not None:
        differs("the fuel limit", limits.get("fuel"), fuel)
    if memory_bytes is not None:
        differs("the memory limit", limits.get("memory_bytes"), memory_bytes)
    if output_bytes is not None:
        differs("the output limit", limits.get("output_bytes"), output_bytes)
    if tasks is not None:
        differs("the number of tasks", answer.get("tasks"), tasks)
    differs("the terms' agent", terms.get("agent"), answer.get("agent"))
    fee = terms.get("fee")
    if max_fee is not None and isinstance(fee, int) and fee > max_fee:
        problems.append(f"the fee is {fee}, more than {max_fee}")
    return problems


class Client:
    """A client of one gateway's job API.

    `key` (a Key or a key file's path) signs jobs and transactions;
    `api_key` is sent as a Bearer token to a keyed gateway.
    """

    def __init__(
        self,
        url: str,
        key: Union[None, Key, PathLike] = None,
        api_key: Optional[str] = None,
        timeout: float = 30.0,
        *,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        base = url.rstrip("/")
        if base.endswith("/v1"):
            base = base[: -len("/v1")]
        self.url = base
        self.key: Optional[Key] = key if key is None or isinstance(key, Key) else Key.load(key)
        self.timeout = timeout
        headers = {"User-Agent": f"idlegrid-python/{__version__}", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=base, headers=headers, timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"Client({self.url!r}, key={self.key!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the HTTP connections."""
        self._http.close()

    # ---- HTTP ----

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if not 200 <= response.status_code < 300:
            raise error_from_response(response.status_code, response.content, response.headers)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Dict[str, Any]:
        """The JSON object a request answers; IdlegridError `bad_answer` for anything else."""
        response = self._request(method, path, **kwargs)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise IdlegridError(
                response.status_code, "bad_answer", f"{method} {path} did not answer a JSON object"
            )
        return answer

    def _need_key(self) -> Key:
        if self.key is None:
            raise ValueError("this needs a key: Client(url, key=Key or key file)")
        return self.key

    # ---- chain ----

    def status(self) -> Dict[str, Any]:
        """The chain's status: chain_id, height, minimum_fee, ..."""
        return self._json("GET", "/v1/status")

    def account(self, did: Optional[str] = None) -> Dict[str, Any]:
        """An account's balance, nonce and next_nonce (the client's own by default)."""
        return self._json("GET", f"/v1/accounts/{did or self._need_key().account}")

    def send_transaction(self, body: bytes) -> str:
        """Signs a transaction body with the client's key, submits it, returns its hash."""
        raw = signed(body, self._need_key())
        answer = self._json("POST", "/v1/transactions", json={"transaction": raw.hex()})
        return str(answer["hash"])

    def wait_transaction(
        self, tx_hash: str, timeout: float = 60.0, poll_interval: float = 0.25
    ) -> Dict[str, Any]:
        """Waits until a transaction is included; TransactionRejected if it did not apply."""
        deadline = time.monotonic() + timeout
        while True:
            view = self._json("GET", f"/v1/transactions/{tx_hash}")
            state = view.get("status")
            rejected = view.get("rejected")
            if state == "included" and not rejected:
                return view
            if state in ("included", "rejected", "dropped"):
                reason = rejected if isinstance(rejected, Mapping) else {}
                raise TransactionRejected(
                    tx_hash,
                    str(reason.get("code") or state),
                    str(reason.get("message") or f"the transaction was {state}"),
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"transaction {tx_hash} is still {state} after {timeout} s")
            time.sleep(min(poll_interval, left))

    def _transact(
        self,
        build: Callable[[str, int, int], bytes],
        fee: Optional[int],
        wait: bool,
        timeout: float,
    ) -> Dict[str, Any]:
        status = self.status()
        nonce = int(self.account()["next_nonce"])
        body = build(
            str(status["chain_id"]), nonce, int(status["minimum_fee"] if fee is None else fee)
        )
        tx_hash = self.send_transaction(body)
        if not wait:
            return {"hash": tx_hash, "status": "pending"}
        return self.wait_transaction(tx_hash, timeout=timeout)

    def transfer(
        self,
        to: str,
        amount: int,
        fee: Optional[int] = None,
        wait: bool = True,
        timeout: float = 60.0,
    ) -> Dict[str, Any]:
        """Sends `amount` to the account `to`; waits for it to be included unless told not to."""
        return self._transact(
            lambda chain, nonce, fee_: encode_transfer(chain, nonce, fee_, to, amount),
            fee,
            wait,
            timeout,
        )

    # ---- delegated stake ----

    def validators(self) -> Dict[str, Any]:
        """The validators: own and delegated stake, commission, power and uptime."""
        return self._json("GET", "/v1/validators")

    def delegations(self, did: Optional[str] = None) -> Dict[str, Any]:
        """An account's delegations (the client's own by default).

        Each has its validator, stake, unclaimed rewards and undelegations.
        """
        return self._json("GET", f"/v1/accounts/{did or self._need_key().account}/delegations")

    def delegate(
        self,
        validator: str,
        amount: int,
        fee: Optional[int] = None,
        wait: bool = True,
        timeout: float = 60.0,
    ) -> Dict[str, Any]:
        """Delegates `amount` to `validator`.

        The delegation shares the validator's rewards (less its commission)
        and its slashes; it waits to be included unless told not to.
        """
        return self._transact(
            lambda chain, nonce, fee_: encode_delegate(chain, nonce, fee_, validator, amount),
            fee,
            wait,
            timeout,
        )

    def undelegate(
        self,
        validator: str,
        amount: int,
        fee: Optional[int] = None,
        wait: bool = True,
        timeout: float = 60.0,
    ) -> Dict[str, Any]:
        """Starts undelegating `amount` from `validator` (back after the unbonding period)."""
        return self._transact(
            lambda chain, nonce, fee_: encode_undelegate(chain, nonce, fee_, validator, amount),
            fee,
            wait,
            timeout,
        )

    def claim_rewards(
        self,
        validator: str,
        fee: Optional[int] = None,
        wait: bool = True,
        timeout: float = 60.0,
    ) -> Dict[str, Any]:
        """Claims what the delegation to `validator` has earned."""
        return self._transact(
            lambda chain, nonce, fee_: encode_claim_rewards(chain, nonce, fee_, validator),
            fee,
            wait,
            timeout,
        )

    def close_job(
        self, job_id: str, timeout: float = 60.0, fee: Optional[int] = None
    ) -> Dict[str, Any]:
        """Closes a job on the ledger (once past its deadline) and waits for it to be included."""
        job_id_bytes(job_id)
        return self._transact(
            lambda chain, nonce, fee_: encode_close_job(chain, nonce, fee_, job_id),
            fee,
            True,
            timeout,
        )

    # ---- blobs ----

    def put_blob(self, data: bytes) -> str:
        """Uploads bytes; returns their content id, checked against the bytes."""
        data = bytes(data)
        if len(data) > BLOB_BYTES_MAX:
            raise ValueError(f"a blob is at most {BLOB_BYTES_MAX} bytes, this one has {len(data)}")
        answer = self._json(
            "PUT", "/v1/blobs", content=data, headers={"Content-Type": "application/octet-stream"}
        )
        cid = cid_of(data)
        if answer.get("cid") != cid:
            raise IdlegridError(
                None,
                "cid_mismatch",
                f"the gateway named the blob {answer.get('cid')}, its BLAKE3 is {cid}",
            )
        return cid

    def get_blob(self, cid: str) -> bytes:
        """Downloads a blob (an upload or a job's output), checked against its content id."""
        if not is_cid(cid):
            raise ValueError(f"not a content id: {cid!r}")
        data = self._request(
            "GET", f"/v1/blobs/{cid}", headers={"Accept": "application/octet-stream"}
        ).content
        if cid_of(data) != cid:
            raise IdlegridError(
                None, "corrupt_blob", f"the bytes served for {cid} have another hash"
            )
        return data

    # ---- jobs ----

    def _blob_cid(self, blob: Union[bytes, bytearray, memoryview, PathLike]) -> str:
        """A blob's content id: bytes and files are uploaded; a `b3:` id is taken as is."""
        if isinstance(blob, (bytes, bytearray, memoryview)):
            return self.put_blob(bytes(blob))
        if isinstance(blob, str) and blob.startswith("b3:"):
            if not is_cid(blob):
                raise ValueError(f"not a content id: {blob!r}")
            return blob
        return self.put_blob(Path(blob).read_bytes())

    def _files_json(self, files: Mapping[str, Any]) -> Dict[str, str]:
        """Input files by name (seen at /input/NAME), each named by its content id."""
        return {str(name): self._blob_cid(blob) for name, blob in files.items()}

    def _task_fields(self, entry: Mapping[str, Any]) -> Dict[str, Any]:
        fields = dict(entry)
        if "args" in fields:
            fields["args"] = [str(arg) for arg in fields["args"]]
        stdin = fields.get("stdin")
        if isinstance(stdin, (bytes, bytearray, memoryview)):
            del fields["stdin"]
            fields["stdin_file"] = self.put_blob(bytes(stdin))
        if "files" in fields:
            fields["files"] = self._files_json(fields["files"])
        return fields

    def _tasks_json(self, tasks: Tasks) -> Tuple[str, Any, int]:
        if isinstance(tasks, bool):
            raise TypeError("tasks is a count, a range or a list of tasks")
        if isinstance(tasks, int):
            if tasks < 1:
                raise ValueError("a job has at least one task")
            return "tasks", {"end": tasks}, tasks
        if isinstance(tasks, Mapping):
            fields = self._task_fields(tasks)
            count = int(fields["end"]) - int(fields.get("start", 0))
            return "tasks", fields, count
        entries: List[Dict[str, Any]] = []
        for entry in tasks:
            if isinstance(entry, Mapping):
                entries.append(self._task_fields(entry))
            elif isinstance(entry, (str, bytes)):
                raise TypeError("a task is a list of arguments or a dict, not a string")
            else:
                entries.append({"args": [str(arg) for arg in entry]})
        if not entries:
            raise ValueError("a job has at least one task")
        return "task", entries, len(entries)

    def prepare(
        self,
        module: Union[bytes, PathLike],
        tasks: Tasks = 1,
        *,
        budget: int,
        price_per_million_fuel: int = 1,
        fuel: Optional[int] = None,
        memory_mib: Optional[int] = None,
        output_bytes: Optional[int] = None,
        wall_time_secs: Optional[int] = None,
        deadline_blocks: Optional[int] = None,
        replicas: Optional[int] = None,
        verification: Optional[Mapping[str, Any]] = None,
        max_fee: Optional[int] = None,
        files: Optional[Mapping[str, Any]] = None,
    ) -> PreparedJob:
        """Uploads the inputs and creates the job; checks its transaction, signs nothing.

        Raises UnsafeTransaction when the gateway's transaction is not the
        job asked for. See `submit` for the arguments.
        """
        key = self._need_key()
        module_cid = self._blob_cid(module)
        job: Dict[str, Any] = {
            "module": module_cid,
            "price_per_million_fuel": price_per_million_fuel,
            "budget": budget,
        }
        if deadline_blocks is not None:
            job["deadline_blocks"] = deadline_blocks
        limits = {
            name: value
            for name, value in (
                ("fuel", fuel),
                ("memory_mib", memory_mib),
                ("output_bytes", output_bytes),
                ("wall_time_secs", wall_time_secs),
            )
            if value is not None
        }
        if limits:
            job["limits"] = limits
        if replicas is not None:
            job["verification"] = {"policy": "replicas", "replicas": replicas}
        elif verification is not None:
            job["verification"] = dict(verification)
        if files:
            job["files"] = self._files_json(files)
        name, value, count = self._tasks_json(tasks)
        job[name] = value
        if max_fee is None:
            max_fee = DEFAULT_FEE_FACTOR * max(1, int(self.status().get("minimum_fee", 1)))
        answer = self._json("POST", "/v1/jobs", json={"requestor": key.account, "job": job})
        problems = check_open_job(
            answer,
            module=module_cid,
            budget=budget,
            price_per_million_fuel=price_per_million_fuel,
            tasks=count,
            fuel=fuel,
            memory_bytes=None if memory_mib is None else memory_mib << 20,
            output_bytes=output_bytes,
            max_fee=max_fee,
        )
        if problems:
            raise UnsafeTransaction(problems)
        return PreparedJob(
            id=str(answer["job"]),
            tasks=int(answer["tasks"]),
            agent=answer.get("agent"),
            transaction=bytes.fromhex(answer["transaction"]),
            terms=dict(answer["terms"]),
            answer=dict(answer),
        )

    def sign(self, prepared: PreparedJob, progress: bool = False) -> Job:
        """Signs a prepared job's transaction and sends the signature: the job opens."""
        signature = self._need_key().sign_transaction(prepared.transaction)
        self._json("POST", f"/v1/jobs/{prepared.id}/signature", json={"signature": signature.hex()})
        return Job(self, prepared.id, tasks=prepared.tasks, progress=progress)

    def submit(
        self,
        module: Union[bytes, PathLike],
        tasks: Tasks = 1,
        *,
        budget: int,
        price_per_million_fuel: int = 1,
        fuel: Optional[int] = None,
        memory_mib: Optional[int] = None,
        output_bytes: Optional[int] = None,
        wall_time_secs: Optional[int] = None,
        deadline_blocks: Optional[int] = None,
        replicas: Optional[int] = None,
        verification: Optional[Mapping[str, Any]] = None,
        max_fee: Optional[int] = None,
        files: Optional[Mapping[str, Any]] = None,
        progress: bool = False,
    ) -> Job:
        """Submits a job and returns it once the gateway has its signed transaction.

        `module`: the .wasm bytes, a path to it, or the `b3:` id of an upload.
        `tasks`: a count N (tasks 0..N, no arguments); a range dict
        `{"start", "end", "args", "stdin"}`; or a list whose entries are
        argument lists or dicts `{"args": [...], "stdin": str | bytes,
        "files": {name: blob}}` (bytes are uploaded and named by
        `stdin_file`). `files`: input files every task reads at
        `/input/NAME`, each bytes, a path, or the `b3:` id of an upload
        (a task's own `files` add to them).
        `budget` is escrowed; `replicas` asks for that many providers per
        task (adaptive verification otherwise). The transaction is signed
        only if it is exactly this job with a fee of at most `max_fee`
        (default: ten times the chain's minimum fee). `progress`: whether
        the job's `wait()` and `results()` show a progress bar by default.
        """
        prepared = self.prepare(
            module,
            tasks,
            budget=budget,
            price_per_million_fuel=price_per_million_fuel,
            fuel=fuel,
            memory_mib=memory_mib,
            output_bytes=output_bytes,
            wall_time_secs=wall_time_secs,
            deadline_blocks=deadline_blocks,
            replicas=replicas,
            verification=verification,
            max_fee=max_fee,
            files=files,
        )
        return self.sign(prepared, progress=progress)

    def job(self, job_id: str, progress: bool = False) -> Job:
        """An existing job (to follow it again after a disconnect); NotFound if unknown."""
        job = Job(self, job_id, progress=progress)
        job.tasks = job.progress().get("tasks_total")
        return job
