"""An in-memory stand-in for the gateway's job API, served through httpx.MockTransport."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional

import httpx
from blake3 import blake3

from idlegrid import Key, account_text
from idlegrid.keys import parse_account, verify_transaction
from idlegrid.tx import encode_open_job

CHAIN_ID = "test-chain"
MIB = 1 << 20


def _error(
    status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None
) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": message}}, headers=headers
    )


class FakeGateway:
    """Answers the job API from memory; records every request it saw."""

    def __init__(self, token: Optional[str] = None) -> None:
        self.token = token
        self.agent = Key(bytes(range(32)))
        self.blobs: Dict[str, bytes] = {}
        self.jobs: Dict[str, Dict[str, Any]] = {}
        self.requests: List[httpx.Request] = []
        self.tamper: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None
        self.corrupt_blobs = False
        self.events_body: Optional[bytes] = None
        self.retry_after = "7"
        self.quota_left = 1 << 30
        self.page_limit = 1000

    def transport(self) -> httpx.MockTransport:
        """A transport to hand to `Client(..., transport=...)`."""
        return httpx.MockTransport(self.handle)

    def paths(self, method: str) -> List[str]:
        """The paths of the requests seen with `method`."""
        return [r.url.path for r in self.requests if r.method == method]

    # ---- routing ----

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if (
            self.token is not None
            and request.headers.get("authorization") != f"Bearer {self.token}"
        ):
            return _error(401, "unauthorized", "a valid API key is needed")
        parts = request.url.path.strip("/").split("/")
        method = request.method
        if parts[:2] == ["v1", "status"]:
            return httpx.Response(200, json={"chain_id": CHAIN_ID, "height": 5, "minimum_fee": 1})
        if parts[:2] == ["v1", "blobs"]:
            return self.blob(request, parts[2:])
        if parts[:2] == ["v1", "jobs"] and method == "POST" and len(parts) == 2:
            return self.create_job(json.loads(request.content))
        if parts[:2] == ["v1", "jobs"] and len(parts) == 4:
            job = self.jobs.get(parts[2])
            if job is None:
                return _error(404, "unknown_job", f"there is no job {parts[2]}")
            return self.job_route(job, parts[3], request)
        return _error(404, "not_found", "there is no endpoint at this path")

    def blob(self, request: httpx.Request, rest: List[str]) -> httpx.Response:
        if request.method == "PUT":
            data = request.content
            if len(data) > self.quota_left:
                return _error(
                    429, "quota_exceeded", "upload quota spent", {"Retry-After": self.retry_after}
                )
            self.quota_left -= len(data)
            cid = "b3:" + blake3(data).hexdigest()
            held = cid in self.blobs
            self.blobs[cid] = data
            return httpx.Response(200 if held else 201, json={"cid": cid, "bytes": len(data)})
        held_data = self.blobs.get(rest[0]) if rest else None
        if held_data is None:
            return _error(404, "unknown_blob", "no such blob")
        if self.corrupt_blobs:
            held_data = held_data[:-1] + bytes([held_data[-1] ^ 1])
        return httpx.Response(
            200, content=held_data, headers={"Content-Type": "application/octet-stream"}
        )

    # ---- jobs ----

    def create_job(self, body: Dict[str, Any]) -> httpx.Response:
        spec = body["job"]
        if spec["module"] not in self.blobs:
            return _error(400, "unknown_blob", f"blob {spec['module']} was not uploaded")
        if "tasks" in spec:
            count = int(spec["tasks"]["end"]) - int(spec["tasks"].get("start", 0))
        elif "task" in spec:
            count = len(spec["task"])
        else:
            return _error(400, "invalid_job", "a job has `tasks` or `task`")
        limits = spec.get("limits", {})
        number = len(self.jobs) + 1
        job_id = "job:" + blake3(f"job {number}".encode()).hexdigest()
        terms = {
            "chain_id": CHAIN_ID,
            "nonce": 0,
            "fee": 1,
            "module": spec["module"],
            "spec": "b3:" + blake3(json.dumps(spec, sort_keys=True).encode()).hexdigest(),
            "escrow": spec["budget"],
            "price_per_million_fuel": spec["price_per_million_fuel"],
            "deadline_height": 5 + spec.get("deadline_blocks", 600),
            "limits": {
                "fuel": limits.get("fuel", 50_000_000_000),
                "memory_bytes": limits.get("memory_mib", 256) * MIB,
                "output_bytes": limits.get("output_bytes", MIB),
            },
            "agent": self.agent.account,
        }
        answer = {
            "job": job_id,
            "status": "unsigned",
            "tasks": count,
            "agent": self.agent.account,
            "transaction": encode_open_job(terms).hex(),
            "terms": terms,
        }
        self.jobs[job_id] = {
            "requestor": body["requestor"],
            "spec": spec,
            "transaction": encode_open_job(terms),
            "signature": None,
            "results": [],
            "view": self.view(job_id, count, "unsigned"),
        }
        if self.tamper is not None:
            answer = self.tamper(json.loads(json.dumps(answer)))
        return httpx.Response(201, json=answer)

    @staticmethod
    def view(job_id: str, tasks: int, status: str) -> Dict[str, Any]:
        return {
            "job": job_id,
            "status": status,
            "tasks_total": tasks,
            "accepted": 0,
            "failed": 0,
            "in_flight": 0,
            "providers": 0,
            "paid": 0,
            "budget": 0,
            "fuel_executed": 0,
            "results": 0,
            "waiting": None,
            "budget_exhausted": False,
            "error": None,
        }

    def job_route(self, job: Dict[str, Any], what: str, request: httpx.Request) -> httpx.Response:
        if what == "signature" and request.method == "POST":
            if job["signature"] is not None:
                return _error(409, "already_signed", "the job is signed already")
            signature = bytes.fromhex(json.loads(request.content)["signature"])
            if not verify_transaction(
                parse_account(job["requestor"]), job["transaction"], signature
            ):
                return _error(400, "bad_signature", "the signature does not verify")
            job["signature"] = signature
            job["view"]["status"] = "opening"
            return httpx.Response(202, json=job["view"])
        if what == "progress":
            return httpx.Response(200, json=job["view"])
        if what == "results":
            after = int(request.url.params.get("after", 0))
            limit = min(int(request.url.params.get("limit", 1000)), self.page_limit)
            page = job["results"][after : after + limit]
            done = job["view"]["status"] in ("finished", "failed")
            return httpx.Response(
                200,
                json={
                    "job": job["view"]["job"],
                    "results": page,
                    "next": after + len(page),
                    "complete": done and after + len(page) >= len(job["results"]),
                },
            )
        if what == "events":
            if self.events_body is None:
                return _error(404, "not_found", "no events here")
            return httpx.Response(
                200, content=self.events_body, headers={"Content-Type": "text/event-stream"}
            )
        return _error(404, "not_found", "there is no endpoint at this path")

    # ---- scripting a job's outcome ----

    def finish(
        self,
        job_id: str,
        outputs: Dict[int, bytes],
        *,
        status: str = "finished",
        budget_exhausted: bool = False,
        error: Optional[Dict[str, str]] = None,
    ) -> None:
        """Gives a job accepted results with these outputs and a final status."""
        job = self.jobs[job_id]
        for index, data in outputs.items():
            cid = "b3:" + blake3(data).hexdigest()
            self.blobs[cid] = data
            job["results"].append(
                {
                    "index": index,
                    "status": "accepted",
                    "exit_code": 0,
                    "output": cid,
                    "bytes": len(data),
                    "fuel": 1000,
                    "error": None,
                    "providers": [account_text(bytes(32))],
                    "verified": "quorum",
                    "rechecked": False,
                }
            )
        view = job["view"]
        view.update(
            status=status,
            accepted=len(outputs),
            results=len(job["results"]),
            budget_exhausted=budget_exhausted,
            error=error,
        )
