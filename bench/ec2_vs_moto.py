"""The EC2 Query API against moto, side by side on loopback, on the same instances.

Starts moto's server (`python -m moto.server`) and a real `nubo serve` (dummy drivers) in a
temporary directory, loads the same instances into each through RunInstances, and prints
server-side times and the ratio for:

  RunInstances          batches of 100 (MinCount=MaxCount=100), instances/s
  DescribeInstances     the full listing
  DescribeInstances     InstanceId.1=<random existing id>, 16 concurrent clients, each
                        request freshly SigV4-signed (Nubo verifies every signature)
  DescribeInstances     Filter instance-state-name=stopped, 2.5 % of the instances stopped
  linearity             Nubo only: the full listing at 2,000 / 5,000 / 10,000 / 20,000

"Server-side" means raw signed HTTP on a persistent connection, timed from sending the
request to reading its last byte: no client-side XML parsing (boto3 numbers, parse
included, are a secondary line). Both servers run on the same box as the client, so the
table also gives each server process's CPU time (from /proc), which other load on the
machine disturbs less than wall time. Nubo runs with EC2_RATE = 0: this measures capacity,
not the per-key request limit.

On Nubo the instances stay pending (no host may take them) except the few that are
stopped: a dummy host sized for exactly those takes them, they run, the host is disabled,
and StopInstances stops them. Exits non-zero if a listing returns a wrong set of instances.

    .venv/bin/python bench/ec2_vs_moto.py            # 2,000 instances, then Nubo to 20,000
    .venv/bin/python bench/ec2_vs_moto.py --quick    # 500 instances, linearity to 2,000
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live import LiveNubo  # noqa: E402
from tests.moto import MotoServer as Moto  # noqa: E402

API_VERSION = "2016-11-15"
REGION = "us-east-1"
INSTANCE_TYPE = "t2.micro"  # CPU 0.5 on Nubo: a host with DUMMY_TOTALCPU = 50 * k takes k
BATCH = 100
CONCURRENCY = 16
NUBO_CONF = """
SCHED_INTERVAL = 1
MAX_DISPATCH = 1000
MAX_HOST = 1000
MONITORING_INTERVAL = 600
VM_POLLING_INTERVAL = 600
REGISTER_LOCALHOST = NO
EC2_RATE = 0
"""
FORM = "application/x-www-form-urlencoded; charset=utf-8"


class BenchError(Exception):
    """A server answered wrongly (count, status): the benchmark fails."""


# Raw signed requests


class Endpoint:
    """One server's EC2 Query endpoint: signs form bodies and times raw round trips."""

    def __init__(self, name: str, port: int, keys: tuple[str, str]) -> None:
        self.name = name
        self.port = port
        self.keys = keys
        self.signer = SigV4Auth(Credentials(*keys), "ec2", REGION)
        self.url = f"http://127.0.0.1:{port}/"

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def sign(self, params: Sequence[tuple[str, str]]) -> tuple[bytes, dict[str, str]]:
        body = urlencode([*params, ("Version", API_VERSION)]).encode()
        req = AWSRequest(method="POST", url=self.url, data=body, headers={"Content-Type": FORM})
        self.signer.add_auth(req)
        return body, dict(req.headers.items())

    def call(self, conn: http.client.HTTPConnection, params: Sequence[tuple[str, str]]
             ) -> tuple[float, bytes]:
        """One request, freshly signed (outside the timing); seconds to the last byte."""
        body, headers = self.sign(params)
        start = time.perf_counter()
        conn.request("POST", "/", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - start
        if resp.status != 200:
            raise BenchError(f"{self.name}: {dict(params).get('Action')} answered "
                             f"{resp.status}: {data[:500]!r}")
        return elapsed, data

    def boto3(self) -> BaseClient:
        return boto3.client("ec2", endpoint_url=self.url.rstrip("/"), region_name=REGION,
                            aws_access_key_id=self.keys[0], aws_secret_access_key=self.keys[1],
                            config=Config(retries={"max_attempts": 1}, read_timeout=600))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def instance_ids(xml: bytes) -> list[str]:
    """Instance ids of a DescribeInstances (reservationSet) or RunInstances answer."""
    root = ET.fromstring(xml)
    sets = [root]
    if _local(root.tag) == "DescribeInstancesResponse":
        sets = [item for rs in _children(root, "reservationSet")
                for item in _children(rs, "item")]
    return [iid.text or "" for holder in sets for inst in _children(holder, "instancesSet")
            for item in _children(inst, "item") for iid in _children(item, "instanceId")]


# Servers


def moto_image(ep: Endpoint) -> str:
    images = ep.boto3().describe_images(Owners=["amazon"])["Images"]
    return str(sorted(i["ImageId"] for i in images)[0])


def one(nubo: LiveNubo, method: str, *args: Any) -> Any:
    """One XML-RPC call (`one.<method>`) with the admin session; its value, or BenchError."""
    ok, value, _ = getattr(nubo.rpc(), f"one.{method}")(nubo.session, *args)
    if not ok:
        raise BenchError(f"one.{method}: {value}")
    return value


def nubo_setup(nubo: LiveNubo) -> tuple[tuple[str, str], str]:
    pair = one(nubo, "user.ec2keys", 0)
    image_id = one(nubo, "image.allocate", 'NAME = "debian"\nPATH = "/var/tmp/debian.img"\n', 1)
    return (str(pair[0]), str(pair[1])), f"ami-{int(image_id):08x}"


# Measurements


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


def pct_ms(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run_instances(ep: Endpoint, image: str, count: int) -> tuple[list[str], list[float]]:
    """Launch `count` instances in batches of BATCH; their ids and each request's time."""
    conn = ep.connect()
    made: list[str] = []
    spent: list[float] = []
    try:
        while len(made) < count:
            n = min(BATCH, count - len(made))
            elapsed, body = ep.call(conn, [("Action", "RunInstances"), ("ImageId", image),
                                           ("MinCount", str(n)), ("MaxCount", str(n)),
                                           ("InstanceType", INSTANCE_TYPE)])
            spent.append(elapsed)
            got = instance_ids(body)
            if len(got) != n:
                raise BenchError(f"{ep.name}: RunInstances of {n} returned {len(got)} instances")
            made += got
    finally:
        conn.close()
    return made, spent


class Listing:
    def __init__(self, times: list[float], size: int, server_cpu: float) -> None:
        self.times = times
        self.size = size  # bytes of XML
        self.server_cpu = server_cpu  # seconds per listing, the server process

    @property
    def ms(self) -> float:
        return median_ms(self.times)


def full_listing(ep: Endpoint, pid: int, expected: set[str], runs: int) -> Listing:
    """Raw full DescribeInstances `runs` times; checks the first answer's instance set."""
    conn = ep.connect()
    times = []
    size = 0
    cpu0 = cpu_seconds(pid)
    try:
        for i in range(runs):
            elapsed, body = ep.call(conn, [("Action", "DescribeInstances")])
            times.append(elapsed)
            if i == 0:
                size = len(body)
                check_set(ep.name, "full DescribeInstances", instance_ids(body), expected)
    finally:
        conn.close()
    return Listing(times, size, (cpu_seconds(pid) - cpu0) / runs)


def check_set(server: str, what: str, got: list[str], expected: set[str]) -> None:
    if len(got) != len(expected) or set(got) != expected:
        raise BenchError(f"{server}: {what} returned {len(got)} instances "
                         f"({len(set(got) & expected)} of the {len(expected)} expected)")


def filtered(ep: Endpoint, expected: set[str], seconds: float, min_runs: int = 5) -> list[float]:
    params = [("Action", "DescribeInstances"), ("Filter.1.Name", "instance-state-name"),
              ("Filter.1.Value.1", "stopped")]
    conn = ep.connect()
    times: list[float] = []
    try:
        start = time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < seconds:
            elapsed, body = ep.call(conn, params)
            if not times:
                check_set(ep.name, "DescribeInstances stopped", instance_ids(body), expected)
            times.append(elapsed)
    finally:
        conn.close()
    return times


class PointReads:
    def __init__(self, rate: float, latencies: list[float], wrong: int, server_cpu: float,
                 client_cpu: float) -> None:
        self.rate = rate
        self.latencies = latencies
        self.wrong = wrong
        self.server_cpu = server_cpu  # seconds per request, the server process
        self.client_cpu = client_cpu  # seconds per request, this process (signing, HTTP)


def point_reads(ep: Endpoint, pid: int, ids: Sequence[str], seconds: float) -> PointReads:
    """CONCURRENCY threads, each with its own connection, reading one random id per request,
    for `seconds`; also the server's and this client's CPU time per request."""
    latencies: list[list[float]] = [[] for _ in range(CONCURRENCY)]
    wrong = [0] * CONCURRENCY
    errors: list[BaseException] = []
    barrier = threading.Barrier(CONCURRENCY + 1)
    stop_at = [0.0]
    go = threading.Event()

    def worker(slot: int) -> None:
        rng = random.Random(slot)
        conn = ep.connect()
        try:
            for _ in range(3):  # warm the connection
                ep.call(conn, [("Action", "DescribeInstances"), ("InstanceId.1", ids[0])])
            barrier.wait()
            go.wait()
            while time.perf_counter() < stop_at[0]:
                wanted = rng.choice(ids)
                elapsed, body = ep.call(conn, [("Action", "DescribeInstances"),
                                               ("InstanceId.1", wanted)])
                latencies[slot].append(elapsed)
                if body.count(b"<instanceId>") != 1 or wanted.encode() not in body:
                    wrong[slot] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)
            barrier.abort()
            go.set()
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(CONCURRENCY)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    server0, client0 = cpu_seconds(pid), time.process_time()
    start = time.perf_counter()
    stop_at[0] = start + seconds
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    server, client = cpu_seconds(pid) - server0, time.process_time() - client0
    if errors:
        raise BenchError(f"{ep.name}: point read failed: {errors[0]!r}")
    flat = [x for slot in latencies for x in slot]
    if not flat:
        raise BenchError(f"{ep.name}: no point read completed")
    return PointReads(len(flat) / wall, flat, sum(wrong), server / len(flat),
                      client / len(flat))


def boto3_listing(client: BaseClient, expected: int, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        got = sum(len(r["Instances"]) for r in client.describe_instances()["Reservations"])
        times.append(time.perf_counter() - start)
        if got != expected:
            raise BenchError(f"boto3 full listing returned {got} instances, not {expected}")
    return times


def boto3_point(client: BaseClient, ids: Sequence[str], seconds: float) -> float:
    rng = random.Random(7)
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        wanted = rng.choice(ids)
        found = client.describe_instances(InstanceIds=[wanted])["Reservations"]
        if [i["InstanceId"] for r in found for i in r["Instances"]] != [wanted]:
            raise BenchError(f"boto3 point read of {wanted} returned {found!r:.200}")
        n += 1
    return n / (time.perf_counter() - start)


def spread(times: Sequence[float]) -> str:
    return (f"{min(times) * 1000:.0f}/{statistics.median(times) * 1000:.0f}/"
            f"{max(times) * 1000:.0f} ms")


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.5)


def states(client: BaseClient, state: str) -> list[str]:
    found = client.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": [state]}])["Reservations"]
    return [i["InstanceId"] for r in found for i in r["Instances"]]


def nubo_stop(nubo: LiveNubo, client: BaseClient, k: int) -> list[str]:
    """Run exactly k of the pending instances on a dummy host sized for k, disable the host,
    stop them: StopInstances needs RUNNING instances, and no other instance gets placed."""
    host = one(nubo, "host.allocate", "bench-host", "dummy", "dummy", "dummy", -1)
    one(nubo, "host.update", host,
        f'DUMMY_TOTALCPU = "{50 * k}"\nDUMMY_TOTALMEMORY = "1073741824"\n', 1)
    running: list[str] = []

    def all_running() -> bool:
        running[:] = states(client, "running")
        return len(running) >= k

    wait_for(f"{k} instances running on Nubo", all_running, 300)
    one(nubo, "host.enable", host, False)
    chosen = sorted(running)[:k]
    client.stop_instances(InstanceIds=chosen)
    wait_for(f"{k} instances stopped on Nubo", lambda: len(states(client, "stopped")) == k, 300)
    return chosen


# Report


def versions() -> str:
    def v(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        commit = "?"
    return (f"Python {platform.python_version()}, moto {v('moto')}, boto3 {v('boto3')}, "
            f"botocore {v('botocore')}, Nubo {v('nubo')} ({commit or '?'}), "
            f"uvicorn {v('uvicorn')}, SQLite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} CPUs")


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def time_row(self, name: str, moto: float, nubo: float, goal: float = 0.0) -> None:
        """Milliseconds: lower is better."""
        self.add(name, f"{moto:,.1f} ms", f"{nubo:,.1f} ms", moto / nubo, goal)

    def rate_row(self, name: str, moto: float, nubo: float, unit: str, goal: float = 0.0) -> None:
        """Per second: higher is better."""
        self.add(name, f"{moto:,.0f} {unit}", f"{nubo:,.0f} {unit}", nubo / moto, goal)

    def add(self, name: str, moto: str, nubo: str, ratio: float, goal: float) -> None:
        verdict = ""
        if goal:
            verdict = f"goal >={goal:g}x: {'met' if ratio >= goal else 'MISSED'}"
        self.rows.append((name, moto, nubo, f"{ratio:,.1f}x", verdict))

    def print(self) -> None:
        head = ("operation", "moto", "Nubo", "Nubo faster by", "")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(5)]
        for i, row in enumerate([head, *self.rows]):
            print(" | ".join(c.ljust(w) if j == 0 else c.rjust(w) if j < 4 else c
                             for j, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
            if i == 0:
                print("-+-".join("-" * w for w in widths[:4]) + "-+-")


# Main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="500 instances, shorter loops, linearity only to 2,000")
    parser.add_argument("--instances", type=int, help="instances loaded into each server")
    args = parser.parse_args()
    count = args.instances or (500 if args.quick else 2000)
    if count % BATCH:
        parser.error(f"--instances must be a multiple of {BATCH}")
    stopped = max(1, round(count * 0.025))
    sizes = [count, 1000, 2000] if args.quick else [count, 5000, 10000, 20000]
    sizes = sorted({s for s in sizes if s >= count})
    big_runs = 5
    point_seconds = 2.0 if args.quick else 4.0
    failures: list[str] = []

    about = versions()
    load_before = os.getloadavg()[0]
    print(f"EC2 front door vs moto: {count:,} instances each ({INSTANCE_TYPE}), "
          f"{stopped} stopped; {about}", flush=True)
    with tempfile.TemporaryDirectory(prefix="nubo-bench-") as tmp:
        var = Path(tmp)
        moto = Moto(var)
        nubo = LiveNubo(var / "nubo", conf=NUBO_CONF)
        try:
            moto.start()
            nubo.start()
            assert moto.proc is not None and nubo.proc is not None
            m = Endpoint("moto", moto.port, ("testing", "testing"))
            keys, nubo_ami = nubo_setup(nubo)
            n = Endpoint("Nubo", nubo.port, keys)
            mc, nc = m.boto3(), n.boto3()
            table = Table()

            print(f"loading {count:,} instances into each (RunInstances, {BATCH} per call) ...",
                  flush=True)
            for ep in (m, n):  # first calls load models and caches on both servers
                warm = ep.connect()
                ep.call(warm, [("Action", "DescribeInstances")])
                warm.close()
            m_ids, m_batches = run_instances(m, moto_image(m), count)
            n_ids, n_batches = run_instances(n, nubo_ami, count)
            table.rate_row(f"RunInstances, {count:,} in batches of {BATCH}",
                           count / sum(m_batches), count / sum(n_batches), "inst/s")

            print(f"stopping {stopped} on each (Nubo: run them on a dummy host first) ...",
                  flush=True)
            start = time.perf_counter()
            m_stopped = sorted(m_ids)[:stopped]
            mc.stop_instances(InstanceIds=m_stopped)
            n_stopped = nubo_stop(nubo, nc, stopped)
            print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)

            print("full listings ...", flush=True)
            m_full = full_listing(m, moto.proc.pid, set(m_ids), big_runs)
            n_full = full_listing(n, nubo.proc.pid, set(n_ids), big_runs)
            table.time_row(f"DescribeInstances, all {count:,} (raw, median of {big_runs})",
                           m_full.ms, n_full.ms, goal=5)
            table.time_row("  server CPU per listing", m_full.server_cpu * 1000,
                           n_full.server_cpu * 1000)
            boto_runs = 3
            m_boto = boto3_listing(mc, count, boto_runs)
            n_boto = boto3_listing(nc, count, boto_runs)
            table.time_row(f"  same through boto3, parse included (median of {boto_runs})",
                           median_ms(m_boto), median_ms(n_boto))
            table.add("  response size per instance", f"{m_full.size / count:,.0f} B",
                      f"{n_full.size / count:,.0f} B", m_full.size / n_full.size, 0)
            table.add("  time per MB of response", f"{m_full.ms * 1e6 / m_full.size:,.0f} ms",
                      f"{n_full.ms * 1e6 / n_full.size:,.0f} ms",
                      (m_full.ms / m_full.size) / (n_full.ms / n_full.size), 0)

            print(f"point reads, {CONCURRENCY} clients x {point_seconds:g} s ...", flush=True)
            mp = point_reads(m, moto.proc.pid, m_ids, point_seconds)
            np_ = point_reads(n, nubo.proc.pid, n_ids, point_seconds)
            for name, reads in (("moto", mp), ("Nubo", np_)):
                if reads.wrong:
                    failures.append(f"{name}: {reads.wrong} point reads returned the wrong "
                                    "instance")
            table.rate_row(f"DescribeInstances one id, {CONCURRENCY} clients (signed per "
                           "request)", mp.rate, np_.rate, "req/s", goal=10)
            table.time_row("  p50 latency", pct_ms(mp.latencies, 0.5),
                           pct_ms(np_.latencies, 0.5))
            table.time_row("  p95 latency", pct_ms(mp.latencies, 0.95),
                           pct_ms(np_.latencies, 0.95))
            table.time_row("  server CPU per request", mp.server_cpu * 1000,
                           np_.server_cpu * 1000)
            client_note = (f"bench client CPU per point read (signing, HTTP): "
                           f"{mp.client_cpu * 1000:.2f} ms against moto, "
                           f"{np_.client_cpu * 1000:.2f} ms against Nubo")
            table.rate_row("  same through boto3, 1 client", boto3_point(mc, m_ids, 2.0),
                           boto3_point(nc, n_ids, 2.0), "req/s")

            print("filtered listings ...", flush=True)
            m_filt = filtered(m, set(m_stopped), 3.0)
            n_filt = filtered(n, set(n_stopped), 3.0)
            table.time_row(f"DescribeInstances state=stopped ({stopped} of {count:,}, "
                           f"median of {min(len(m_filt), len(n_filt))}+)",
                           median_ms(m_filt), median_ms(n_filt))
            moto.stop()  # the rest is Nubo alone: give it the whole machine

            print("Nubo linearity ...", flush=True)
            line: list[tuple[int, Listing]] = [(count, n_full)]
            all_ids = list(n_ids)
            for size in sizes[1:]:
                more, spent = run_instances(n, nubo_ami, size - len(all_ids))
                print(f"  +{len(more):,} instances at {len(more) / sum(spent):,.0f}/s",
                      flush=True)
                all_ids += more
                line.append((size, full_listing(n, nubo.proc.pid, set(all_ids), big_runs)))

            print()
            table.print()
            print()
            print(f"Nubo full listing (raw, median of {big_runs}); instances pending except "
                  f"{stopped} stopped:")
            for size, listing in line:
                print(f"  {size:>6,} instances: {listing.ms:>9,.1f} ms = "
                      f"{listing.ms / size * 1000:6.1f} us per instance; server CPU "
                      f"{listing.server_cpu / size * 1e6:6.1f} us per instance "
                      f"({listing.size / 1e6:.1f} MB)")
            if len(line) > 1:
                (first, a), (last, z) = line[0], line[-1]
                print(f"  per-instance time at {last:,} / at {first:,}: "
                      f"{(z.ms / last) / (a.ms / first):.2f} (1.00 = linear)")
            print()
            print(f"{client_note}; both servers and the client share {os.cpu_count()} CPUs")
            print(f"RunInstances per batch of {BATCH}, min/median/max: moto "
                  f"{spread(m_batches)}, Nubo {spread(n_batches)}")
            print(f"load average (1 min) at start {load_before:.1f}, at end "
                  f"{os.getloadavg()[0]:.1f}: above {os.cpu_count()} means other work shared "
                  "the CPUs (the server CPU rows are the less disturbed measure)")
            print(about)
        except BenchError as exc:
            failures.append(str(exc))
        finally:
            moto.stop()
            nubo.stop()
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
