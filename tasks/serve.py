"""``python -m tasks serve``: a fine-tuned checkpoint (or its ONNX export) behind HTTP, on LitServe.

One process tree: this process (LitServe's supervisor), one HTTP process per inference worker
(uvicorn, forked) and ``--workers`` inference processes, each holding one ``tasks.predictor.Predictor``.
A request goes: HTTP process (admission: the in-flight bound, body size, JSON, record shape) ->
LitServe's queue -> an inference worker, which takes the first waiting request, waits at most
``--max_wait_ms`` for more (stopping early once ``--max_batch_tokens`` are collected), checks each
request's records on its own and runs the good ones together through the predictor, which groups
them by length into token-budget batches.

Nothing here imports Lightning (LitServe does not either) and this process does not import torch:
only the inference workers load the model.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from .io import CommandParser, UserError

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # the interfaces LitServe binds to
MAX_BODY_BYTES = 4 * 1024 * 1024  # a request body past this is refused (413) before it is read whole
MAX_FIELD_CHARS = 100_000  # a text field past this is refused (413): no model reads that much of it
MAX_RECORDS = 1024  # records in one request
RETRY_AFTER_S = 1  # what a 503 asks the client to wait


# The command's options: name -> argparse's keywords (the README's table says the same).
OPTIONS: dict[str, dict[str, Any]] = {
    "--ckpt_path": {"required": True, "help": "a .ckpt written by fit, or an ONNX export directory"},
    "--host": {
        "default": "127.0.0.1",
        "choices": HOSTS,
        "help": "the interface to bind (default: local only)",
    },
    "--port": {"type": int, "default": 8000, "help": "1024-65535 (default 8000)"},
    "--runtime": {"default": "torch", "choices": ("torch", "onnx"), "help": "what runs the model"},
    "--max_batch_tokens": {
        "type": int,
        "default": 4096,
        "help": "tokens (padding included) in one forward pass; also ends a batch's wait once collected",
    },
    "--max_wait_ms": {
        "type": float,
        "default": 2.0,
        "help": "how long a worker waits for more requests after the first before it runs the batch",
    },
    "--workers": {"type": int, "default": 1, "help": "inference processes (each loads the model)"},
    "--max_queue": {
        "type": int,
        "default": 256,
        "help": "requests admitted at once (queued or running); past it a request gets 503 with Retry-After",
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(
        prog="python -m tasks serve",
        description="Serve a fine-tuned checkpoint over HTTP (LitServe): POST /predict, GET /health, GET /info.",
    )
    for name, keywords in OPTIONS.items():
        parser.add_argument(name, **keywords)
    args = parser.parse_args(argv)
    _check_options(args)
    if not Path(args.ckpt_path).exists():
        raise UserError(f"--ckpt_path {args.ckpt_path}: no such file or directory")
    _check_port(args.host, args.port)
    return serve(args)


def _check_options(args: Any) -> None:
    if not 1024 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: LitServe takes a port from 1024 to 65535")
    for name in ("max_batch_tokens", "workers", "max_queue"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: must be at least 1")
    if args.max_wait_ms < 0:
        raise UserError(f"--max_wait_ms {args.max_wait_ms}: must be 0 or more")


def _check_port(host: str, port: int) -> None:
    """A port in use is one line now, not uvicorn's exit after the model has loaded."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UserError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror})") from None


def serve(args: Any) -> int:
    """Run the server until SIGTERM or Ctrl+C; 0 once in-flight requests are answered and all stopped."""
    state = Path(tempfile.mkdtemp(prefix="bert-tasks-serve-"))
    from .serve_worker import PredictorAPI

    api = PredictorAPI(args, state / "info.json")
    in_flight = multiprocessing.Value("i", 0)  # shared by the forked HTTP processes
    server = pipe_queue_server()(
        api,
        accelerator="cpu",
        workers_per_device=args.workers,
        info_path="/litserve/info",  # /info is ours: the predictor's
        middlewares=[(Admission, {"in_flight": in_flight, "limit": args.max_queue})],
    )
    server.app.add_api_route("/info", _info_endpoint(state / "info.json"), methods=["GET"])
    print(
        f"serving {args.ckpt_path} at http://{args.host}:{args.port}: POST /predict, GET /health, GET /info "
        f"(ready when /health answers ok; SIGTERM stops it after answering what is in flight)",
        flush=True,
    )
    # How long the workers' OpenMP threads spin before they sleep, waiting for the next parallel
    # region (torch's libgomp reads it when a spawned worker imports torch). A lone SST-2 request on
    # 2 cores, p50 / p99 ms, quiet and beside two busy processes: libgomp's default (300,000 spins)
    # 16 / 24 and 88 / 460 (a spinning thread takes the core its partner needs); sleeping at once
    # (OMP_WAIT_POLICY=PASSIVE: each of a forward's ~100 regions wakes the threads) 22 / 31 and
    # 56 / 78; 10,000 spins, which bridge the gaps inside a forward and no more, 16 / 26 and 42 / 85.
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    # A SIGKILLed supervisor runs no clean-up: LitServe's forked processes (its manager, the HTTP
    # servers) stop on their own, and so do the spawned workers (PredictorAPI.setup).
    from .runtime import forks_exit_with_parent

    forks_exit_with_parent()
    owner = os.getpid()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: _on_sigterm(owner, server))
    try:
        server.run(
            host=args.host,
            port=args.port,
            log_level="warning",  # no line per request
            generate_client_file=False,
        )
    except KeyboardInterrupt:
        pass  # a SIGTERM before the server was up: nothing in flight to answer
    except RuntimeError as err:
        failure = _read_json(state / "info.json").get("error")
        if failure is None:
            raise
        raise UserError(failure) from err
    finally:
        signal.signal(signal.SIGTERM, previous)
        for child in multiprocessing.active_children():  # whatever a failed start left behind
            child.terminate()
            child.join(5)
        shutil.rmtree(state, ignore_errors=True)
    return 0


def pipe_queue_server() -> type:
    """LitServer whose request and response queues are pipes (``multiprocessing.Queue``) instead of
    its Manager's proxy queues, each put and get of which is a round trip to the Manager's process:
    a pipe is one write and one read (a lone request's p50 about 1 ms less on 2 cores). The Manager
    keeps what it is good for (the workers' status, the shutdown event). LitServe hands the queues
    to the processes it starts, spawned or forked, which is how a multiprocessing.Queue is shared."""
    import litserve as ls
    from litserve.transport.process_transport import MPQueueTransport

    class PipeQueueServer(ls.LitServer):
        def _init_manager(self, num_api_servers: int):
            manager = super()._init_manager(num_api_servers)
            if not isinstance(self._transport, MPQueueTransport):  # fast_queue (ZMQ) stays as it is
                return manager
            context = multiprocessing.get_context("spawn")  # a spawn context's locks go to spawned workers
            for path in self.litapi_request_queues:
                self.litapi_request_queues[path] = context.Queue()
            self._transport = MPQueueTransport(manager, [context.Queue() for _ in range(num_api_servers)])
            return manager

    return PipeQueueServer


def _on_sigterm(owner: int, server: Any) -> None:
    """SIGTERM, in the supervisor: LitServe's own graceful stop (the event its /shutdown sets), which
    stops the HTTP processes first (uvicorn answers the requests in flight and accepts no new ones),
    then the workers. Set from another thread: this one is waiting on it. Before LitServe made the
    event, nothing is in flight: stop at once. In a forked HTTP process that inherited this handler
    (uvicorn raises the signal again once it has stopped): a quiet exit."""
    if os.getpid() != owner:
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one shutdown, however many signals
    event = getattr(server, "_shutdown_event", None)
    if event is None:
        raise KeyboardInterrupt
    threading.Thread(target=event.set, daemon=True).start()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _info_endpoint(path: Path):
    from starlette.responses import JSONResponse

    async def info() -> JSONResponse:
        return JSONResponse(_read_json(path).get("info", {}))

    return info


# -- the HTTP side: admission before a request is queued ----------------------------------------


class Admission:
    """ASGI middleware on ``POST /predict``: a bounded number of requests in flight (past it, 503
    with Retry-After at once, instead of a queue that grows), and a body that is JSON holding a
    record or a list of them, with no text field too long, before the request costs a worker
    anything. Field by field checks (names, types, empty text) are the predictor's, in the worker."""

    def __init__(self, app: Any, in_flight: Any, limit: int):
        self.app, self.in_flight, self.limit = app, in_flight, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        with self.in_flight.get_lock():
            admitted = self.in_flight.value < self.limit
            if admitted:
                self.in_flight.value += 1
        if not admitted:
            message = f"the server is busy ({self.limit} requests in flight, --max_queue); retry later"
            await _respond(send, 503, message, [(b"retry-after", str(RETRY_AFTER_S).encode())])
            return
        try:
            body, status, problem = await _read_body(receive)
            if problem is None:
                status, problem = check_payload(body)
            if problem is not None:
                await _respond(send, status, problem)
                return
            # The body is JSON whatever the client said (curl -d says a form, which LitServe would parse as one).
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
            await self.app(scope, _replay(body, receive), send)
        finally:
            with self.in_flight.get_lock():
                self.in_flight.value -= 1


async def _read_body(receive: Any) -> tuple[bytes, int, str | None]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", 400, "request body: the client went away"
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"", 413, f"request body: more than {MAX_BODY_BYTES // (1024 * 1024)} MiB"
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), 200, None


def _replay(body: bytes, receive: Any):
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _respond(send: Any, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def check_payload(body: bytes) -> tuple[int, str | None]:
    """(HTTP status, the problem) of a request body, or (200, None): JSON, a record (object) or a
    non-empty list of at most MAX_RECORDS records, no string field over MAX_FIELD_CHARS."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        return 400, f"request body: not JSON ({err})"
    records = payload if isinstance(payload, list) else [payload]
    if not records:
        return 422, "request body: an empty list (send a record, or a list of records)"
    if len(records) > MAX_RECORDS:
        return 413, f"request body: {len(records)} records, more than the {MAX_RECORDS} one request takes"
    for index, record in enumerate(records):
        where = f"record {index}: " if isinstance(payload, list) else ""
        if not isinstance(record, dict):
            if not where:
                return (
                    422,
                    f"request body: a record (JSON object) or a list of them, not {_json_type(record)}",
                )
            return 422, f"{where}a record (JSON object) expected, got {_json_type(record)}"
        for field, value in record.items():
            if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                return (
                    413,
                    f"{where}field {field!r}: {len(value):,} characters, more than the {MAX_FIELD_CHARS:,} taken",
                )
    return 200, None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
