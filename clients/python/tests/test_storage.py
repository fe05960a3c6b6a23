"""Inputs read from and outputs written to S3-compatible storage by `idlegrid submit`.

A real S3 server (moto's, on loopback, started here) holds a job's input
files; the requestor reads them (by `s3://` with credentials from its own
environment, and by plain http), serves them to the devnet's providers by
content id, and writes every verified output, and `results.json`, to a
bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Tuple

import boto3
import pytest
from conftest import FILESUM, Devnet, filesum_line
from moto.server import ThreadedMotoServer

pytestmark = pytest.mark.devnet

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


@pytest.fixture(scope="module")
def s3() -> Iterator[Tuple[str, Any]]:
    """A running S3 server's endpoint, and a client of it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    yield endpoint, client
    server.stop()


def submit(devnet: Devnet, binary: Path, job: Path, out: Path, cache: Path) -> None:
    """Runs `idlegrid submit` on `job` against the devnet, with S3 credentials."""
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), **CREDENTIALS)
    command = [
        str(binary), "submit", "--json", "--no-mdns",
        "--node", str(devnet.ready["validator_api"]),
        "--bootstrap", str(devnet.ready["gateway_addresses"][0]),  # type: ignore[index]
        "--listen", "/ip4/127.0.0.1/tcp/0",
        "--key", str(devnet.requestor_key),
        "--out", str(out),
        str(job),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, (done.stdout.decode(), done.stderr.decode()[-4000:])


def test_inputs_from_s3_and_outputs_to_s3(
    devnet: Devnet, idlegrid_bin: Path, s3: Tuple[str, Any], tmp_path: Path
) -> None:
    endpoint, client = s3
    client.create_bucket(Bucket="inputs")
    client.create_bucket(Bucket="results")
    shared = bytes((i * 13 + i // 509) % 256 for i in range(150_000))
    owns = [bytes((i * (k + 5)) % 256 for i in range(8192)) for k in range(3)]
    client.put_object(Bucket="inputs", Key="model/shared.bin", Body=shared)
    for index, own in enumerate(owns):
        client.put_object(
            Bucket="inputs", Key=f"frames/{index}.bin", Body=own, ACL="public-read"
        )
    job = tmp_path / "job.toml"
    job.write_text(
        f'module = "{FILESUM}"\n'
        "price_per_million_fuel = 1\nbudget = 1000\n"
        "[limits]\nfuel = 20000000\n"
        f'[storage]\nendpoint = "{endpoint}"\nregion = "us-east-1"\n'
        '[files]\n"shared.bin" = "s3://inputs/model/shared.bin"\n'
        # Each task's own file by plain http (the server answers path-style).
        f'[tasks]\nend = 3\nfiles = {{ "own.bin" = "{endpoint}/inputs/frames/{{index}}.bin" }}\n'
        '[output]\nurl = "s3://results/run-1"\n'
    )
    out, cache = tmp_path / "out", tmp_path / "cache"
    submit(devnet, idlegrid_bin, job, out, cache)

    results = json.loads((out / "results.json").read_text())
    assert results["accepted"] == 3 and results["failed"] == 0, results
    for record in results["tasks"]:
        index = record["index"]
        expected = filesum_line(owns[index], shared)
        assert (out / record["file"]).read_bytes() == expected
        stored = client.get_object(Bucket="results", Key=f"run-1/{record['file']}")
        assert stored["Body"].read() == expected, index
    stored = client.get_object(Bucket="results", Key="run-1/results.json")
    assert json.loads(stored["Body"].read())["accepted"] == 3
    # What was downloaded for the job went with it.
    assert list((cache / "idlegrid" / "inputs").iterdir()) == []


def test_a_missing_object_fails_the_job_before_it_opens(
    devnet: Devnet, idlegrid_bin: Path, s3: Tuple[str, Any], tmp_path: Path
) -> None:
    endpoint, client = s3
    client.create_bucket(Bucket="sparse")
    job = tmp_path / "job.toml"
    job.write_text(
        f'module = "{FILESUM}"\nprice_per_million_fuel = 1\nbudget = 1000\n'
        f'[storage]\nendpoint = "{endpoint}"\n'
        '[files]\n"shared.bin" = "s3://sparse/absent.bin"\n[tasks]\nend = 1\n'
    )
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), **CREDENTIALS)
    done = subprocess.run(
        [str(idlegrid_bin), "submit", "--json", "--no-mdns",
         "--node", str(devnet.ready["validator_api"]),
         "--key", str(devnet.requestor_key), "--out", str(tmp_path / "out"), str(job)],
        env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    error = json.loads(done.stdout.decode().strip().splitlines()[-1])["error"]["message"]
    assert "s3://sparse/absent.bin" in error and "job.toml:7:16" in error, error
