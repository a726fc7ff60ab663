"""``python -m tasks serve`` under load, against FastAPI + ``transformers.pipeline`` and against
``python -m tasks predict`` on a file, same weights, whole processes on loopback.

For SST-2 sentences (classification) and WNUT-17 test sentences (NER) from ../shared/data, with the
checkpoint and Hugging Face export that ``benchmarks/predict.py`` makes (a short fit of the shipped
config on all-MiniLM-L6-v2; speed does not depend on how well it is trained):

* ours: ``python -m tasks serve --ckpt_path best.ckpt`` with its defaults;
* baseline: a FastAPI app as users write it (written by this script into the work directory),
  ``pipeline(task, model=export_dir)`` called on one request's sentence at a time in a plain
  ``def`` endpoint, under ``uvicorn``;
* predict: ``python -m tasks predict --ckpt_path best.ckpt --data.predict_file sentences.txt`` on
  the sentences the servers were sent, start-up included.

A client in this process (asyncio, one keep-alive connection per concurrent client) sends one
sentence per request at each concurrency level, at most ``--requests`` requests or ``--duration``
seconds per level, after a few unmeasured warm-up requests. Per level: requests per second, p50
and p99 latency, and the CPU time the server's processes used per request (user + system: what a
request costs, whatever share of a loaded machine the server got). Per server: seconds until
``/health`` answers, and peak memory of its whole process tree: RSS as the sum of each process's
own peak (VmHWM: it counts the pages forked processes share in each of them), PSS (which shares
them out) read after each level. Nothing reads a server's /proc while a level runs: reading
smaps_rollup walks a process's page tables under its memory-map lock, which stalls the process
where it maps memory, and the processes of our tree (4) would pay that more than the baseline's (1).
Our records at concurrency 1 are compared with predict's.

    python benchmarks/serve.py [--tasks sst2,ner] [--requests 1000] [--duration 10] [--levels 1,8,32,128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from predict import prepare, tasks_command, timed

ROOT = Path(__file__).resolve().parents[1]

BASELINE_APP = r'''
"""FastAPI + transformers.pipeline, one request's sentence at a time, as users write it."""
import json
import os

from fastapi import FastAPI
from transformers import pipeline

TASK = os.environ["BASELINE_TASK"]
pipe = pipeline(TASK, model=os.environ["BASELINE_MODEL"], device=-1)
extra = {"aggregation_strategy": "first"} if TASK == "token-classification" else {}
app = FastAPI()


@app.get("/health")
def health():
    return "ok"


@app.post("/predict")
def predict(record: dict):
    return json.loads(json.dumps(pipe(record["text"], **extra), default=float))  # numpy floats
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process tree: started, waited for, its memory measured, stopped with SIGTERM."""

    def __init__(
        self, name: str, command: list[str], port: int, cwd: Path, env: dict[str, str] | None = None
    ):
        self.name, self.port = name, port
        self.log = (cwd / f"{name.split()[0]}-{port}.log").open("w")
        start = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.peak_rss = self.peak_pss = 0.0
        self.ready_s = self._wait_ready(start)

    def _wait_ready(self, start: float, timeout: float = 300) -> float:
        while time.perf_counter() - start < timeout:
            if self.process.poll() is not None:
                sys.exit(f"{self.name} exited ({self.process.returncode}); see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - start
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit(f"{self.name} was not ready in {timeout:.0f} s; see {self.log.name}")

    def measure(self) -> None:
        """Peak RSS (the processes' VmHWM, summed) and PSS now, kept if higher: between levels."""
        rss = pss = 0.0
        for pid in tree(self.process.pid):
            rss += proc_kb(pid, "status", "VmHWM:")
            pss += proc_kb(pid, "smaps_rollup", "Pss:")
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss / 1024), max(self.peak_pss, pss / 1024)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes have used so far."""
        ticks = 0
        for pid in tree(self.process.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            for pid in reversed(tree(self.process.pid)):
                os.kill(pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def proc_kb(pid: int, name: str, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(key):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


async def http_post(reader, writer, body: bytes) -> tuple[int, bytes]:
    """One request on a keep-alive connection: (status, body)."""
    writer.write(
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunks.append(await reader.readexactly(size + 2))
            if size == 0:
                return status, b"".join(c[:-2] for c in chunks)
    return status, await reader.readexactly(int(headers.get(b"content-length", b"0")))


async def load(port: int, bodies: list[bytes], concurrency: int, limit: int, duration: float) -> dict:
    """Send ``bodies`` (cycled) from ``concurrency`` clients until ``limit`` requests or ``duration`` s."""
    latencies: list[float] = []
    answers: dict[int, bytes] = {}
    failures: dict[int, int] = {}
    sent = 0
    deadline = time.perf_counter() + duration

    async def client() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while sent < limit and time.perf_counter() < deadline:
                index = sent
                sent += 1
                start = time.perf_counter()
                status, body = await http_post(reader, writer, bodies[index % len(bodies)])
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    failures[status] = failures.get(status, 0) + 1
                answers[index] = body
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "per_s": len(latencies) / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)],
        "failures": failures,
        "answers": answers,
    }


def compare(served: dict[int, bytes], predicted: list[dict]) -> str:
    """Our served records against predict's, record by record (the request's own "line" and
    "index" aside: each request is a file of one line)."""
    worst, differing = 0.0, 0
    for index, body in served.items():
        ours, theirs = json.loads(body), predicted[index % len(predicted)]
        difference = distance(strip(ours), strip(theirs))
        worst = max(worst, difference)
        differing += difference > 1e-4
    return f"{len(served) - differing}/{len(served)} records equal to predict's (largest number difference {worst:.1e})"


def strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("line", "index")}


def distance(a, b) -> float:
    """0 for equal JSON values, the largest difference between numbers, inf for other differences."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return math.inf
        return max((distance(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return math.inf
        return max((distance(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b)
    return 0.0 if a == b else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="sst2,ner")
    parser.add_argument("--levels", default="1,8,32,128", help="concurrency levels")
    parser.add_argument("--requests", type=int, default=1000, help="at most this many requests per level")
    parser.add_argument("--duration", type=float, default=10, help="at most this many seconds per level")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "benchmarks" / "serve")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    print(f"# serve benchmark: load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    print(f"# at most {args.requests} requests or {args.duration:g} s per level, one sentence a request\n")
    print(
        "| task | runner | concurrency | requests | requests/s | ours / runner | p50 ms | p99 ms | CPU ms / request |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    for task in args.tasks.split(","):
        work = args.work / task
        _, checkpoint, export, source, _, pipeline_task = prepare(task, work, args.requests)
        sentences = source.read_text(encoding="utf-8").splitlines()
        bodies = [json.dumps({"text": s}).encode() for s in sentences]
        (work / "baseline_app.py").write_text(BASELINE_APP, encoding="utf-8")
        runners = {
            "ours (serve)": (tasks_command("serve", "--ckpt_path", checkpoint, "--port", "{port}"), env),
            "FastAPI + pipeline": (
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "baseline_app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "{port}",
                ]
                + ["--log-level", "warning"],
                dict(env, BASELINE_TASK=pipeline_task, BASELINE_MODEL=str(export)),
            ),
        }
        results: dict[str, dict[int, dict]] = {}
        for name, (command, runner_env) in runners.items():
            port = free_port()
            server = Server(name, [c.replace("{port}", str(port)) for c in command], port, work, runner_env)
            try:
                asyncio.run(load(port, bodies, 1, 16, 60))  # warm-up, not measured
                results[name] = {}
                for level in levels:
                    used = server.cpu_seconds()
                    row = asyncio.run(load(port, bodies, level, args.requests, args.duration))
                    row["cpu_ms"] = 1000 * (server.cpu_seconds() - used) / max(row["requests"], 1)
                    server.measure()
                    results[name][level] = row
            finally:
                server.stop()
            notes.append(
                f"{task}, {name}: ready in {server.ready_s:.1f} s; peak memory of its processes: "
                f"RSS {server.peak_rss:.0f} MB (summed), PSS {server.peak_pss:.0f} MB; exit {server.process.returncode}"
            )
        ours = results["ours (serve)"]
        for name, by_level in results.items():
            for level, row in by_level.items():
                ratio = "1.00" if name.startswith("ours") else f"{ours[level]['per_s'] / row['per_s']:.2f}x"
                failed = f" ({row['failures']} failed)" if row["failures"] else ""
                print(
                    f"| {task} | {name} | {level} | {row['requests']}{failed} | {row['per_s']:.1f} | {ratio} "
                    f"| {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['cpu_ms']:.1f} |"
                )
        # predict on a file of the sentences the servers were sent (at most --requests of them)
        predictions = work / "predict" / "predictions.jsonl"
        command = tasks_command(
            "predict", "--ckpt_path", checkpoint, "--data.predict_file", source,
            "--data.predictions_file", predictions, "--trainer.default_root_dir", work / "predict",
        )  # fmt: skip
        seconds, rss = timed(command)
        rate = len(sentences) / seconds
        print(
            f"| {task} | predict on a file ({len(sentences)} sentences, start-up included) | - | {len(sentences)} "
            f"| {rate:.1f} | {max(r['per_s'] for r in ours.values()) / rate:.2f}x (best level) | - | {seconds * 1000:.0f} (whole file) | - |"
        )
        predicted = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
        notes.append(f"{task}, predict on a file: peak RSS {rss:.0f} MB")
        notes.append(f"{task}: " + compare(ours[levels[0]]["answers"], predicted))
    print()
    for note in notes:
        print(f"- {note}")
    print(f"\n(load average at the end {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
