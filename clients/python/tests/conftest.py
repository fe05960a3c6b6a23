"""Fixtures: the idlegrid binary, and local devnets (open and keyed) to test against."""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
MANDELBROT = REPO / "examples" / "mandelbrot" / "mandelbrot.wasm"
#: Reads /input/own.bin whole and a 64 KiB window of /input/shared.bin.
FILESUM = REPO / "crates" / "cli" / "tests" / "modules" / "filesum.wasm"
READY_TIMEOUT_SECS = 180.0


def filesum_line(own: bytes, shared: bytes) -> bytes:
    """What the filesum module prints: FNV-1a over 64-bit little-endian words."""

    def fnv(data: bytes) -> int:
        value = 14695981039346656037
        for (word,) in struct.iter_unpack("<Q", data):
            value = ((value ^ word) * 1099511628211) % (1 << 64)
        return value

    window = 65536
    own_hash = fnv(own)
    at = own_hash % (len(shared) - window)
    shared_hash = fnv(shared[at : at + window])
    return f"own={own_hash:016x} shared={shared_hash:016x} at={at} size={len(shared)}\n".encode()
STOP_TIMEOUT_SECS = 60.0


def idlegrid_binary() -> Path:
    """The idlegrid CLI: $IDLEGRID_BIN, else $CARGO_TARGET_DIR/debug/, the repo's target/debug/,
    or the shared cache's target/debug/ (the first that exists)."""
    candidates: List[Path] = []
    if os.environ.get("IDLEGRID_BIN"):
        candidates.append(Path(os.environ["IDLEGRID_BIN"]))
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "idlegrid")
    candidates.append(REPO / "target" / "debug" / "idlegrid")
    candidates.append(Path("/root/.cache/idlegrid/target/debug/idlegrid"))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "the idlegrid binary is missing: build it (cargo build -p idlegrid) or set IDLEGRID_BIN; "
        "looked at " + ", ".join(str(c) for c in candidates),
        pytrace=False,
    )


@pytest.fixture(scope="session")
def idlegrid_bin() -> Path:
    """The idlegrid CLI binary."""
    return idlegrid_binary()


@dataclass
class Devnet:
    """A running `idlegrid devnet`: its dashboard URL (the gateway API is under /v1) and keys."""

    url: str
    requestor_key: Path
    dir: Path
    ready: Dict[str, object]
    process: "subprocess.Popen[bytes]"
    stderr_path: Path
    api_keys: Dict[str, str] = field(default_factory=dict)

    def stderr_tail(self, lines: int = 40) -> str:
        """The last lines the devnet wrote on stderr."""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _pump(stream: "object", lines: "queue.Queue[Optional[bytes]]") -> None:
    for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
        lines.put(line)
    lines.put(None)


def start_devnet(binary: Path, directory: Path, api_keys_file: Optional[Path] = None) -> Devnet:
    """Starts a devnet and waits (bounded) for its `ready` event."""
    directory.mkdir(parents=True, exist_ok=True)
    state = directory / "state"
    stderr_path = directory / "devnet.stderr"
    command = [str(binary), "devnet", "--dir", str(state), "--port", "0", "--json", "--reset"]
    if api_keys_file is not None:
        command += ["--api-keys", str(api_keys_file)]
    stderr = open(stderr_path, "wb")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, cwd=directory
    )
    stderr.close()
    lines: "queue.Queue[Optional[bytes]]" = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_SECS
    seen: List[str] = []
    while True:
        left = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(0.1, left)) if left > 0 else None
        except queue.Empty:
            line = None
        if line is None:
            try:
                code: Optional[int] = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            status = "timed out" if code is None else f"exited with status {code}"
            _stop(process)
            tail = "\n".join(stderr_path.read_text(errors="replace").splitlines()[-40:])
            pytest.fail(
                f"the devnet ({' '.join(command)}) {status} before it was ready;\n"
                f"stdout:\n{''.join(seen)}\nstderr (tail):\n{tail}",
                pytrace=False,
            )
        text = line.decode("utf-8", "replace")
        seen.append(text)
        try:
            event = json.loads(text)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "ready":
            return Devnet(
                url=str(event["dashboard"]),
                requestor_key=Path(str(event["requestor_key"])),
                dir=state,
                ready=event,
                process=process,
                stderr_path=stderr_path,
            )


def _stop(process: "subprocess.Popen[bytes]") -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def stop_devnet(devnet: Devnet) -> None:
    """Ctrl-C for the devnet (providers redeem first), then kill if it does not stop."""
    _stop(devnet.process)


@pytest.fixture(scope="session")
def devnet(idlegrid_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """An open devnet (no API keys), shared by the session."""
    net = start_devnet(idlegrid_bin, tmp_path_factory.mktemp("devnet"))
    try:
        yield net
    finally:
        stop_devnet(net)


#: The keyed devnet's API keys: name -> (jobs_at_once, tasks_per_job, upload_bytes_per_hour).
KEYED_QUOTAS = {
    "main": (8, 10_000, 100_000_000),
    "tiny-upload": (8, 10_000, 1_000),
    "one-job": (1, 10_000, 100_000_000),
    "few-tasks": (8, 2, 100_000_000),
}


@pytest.fixture(scope="session")
def keyed_devnet(idlegrid_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """A devnet whose gateway wants API keys (see KEYED_QUOTAS; `api_keys` maps name -> token)."""
    directory = tmp_path_factory.mktemp("keyed-devnet")
    tokens = {name: f"{name}-{secrets.token_hex(16)}" for name in KEYED_QUOTAS}
    text = ""
    for name, (jobs, tasks, upload) in KEYED_QUOTAS.items():
        text += (
            f'[[key]]\nname = "{name}"\ntoken = "{tokens[name]}"\njobs_at_once = {jobs}\n'
            f"tasks_per_job = {tasks}\nupload_bytes_per_hour = {upload}\n\n"
        )
    keys_file = directory / "api-keys.toml"
    keys_file.write_text(text)
    net = start_devnet(idlegrid_bin, directory, api_keys_file=keys_file)
    net.api_keys = tokens
    try:
        yield net
    finally:
        stop_devnet(net)


def exec_output(binary: Path, module: Path, args: List[str]) -> bytes:
    """What `idlegrid exec` prints for one task: the task's stdout."""
    done = subprocess.run(
        [str(binary), "exec", str(module), "--", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def exec_fuel(binary: Path, module: Path, args: List[str]) -> int:
    """The fuel one task uses, from `idlegrid exec --json`."""
    done = subprocess.run(
        [str(binary), "exec", "--json", str(module), "--", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return int(json.loads(done.stdout)["fuel_used"])
