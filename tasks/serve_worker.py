"""The inference worker of ``python -m tasks serve``: LitServe's hooks over one Predictor, and the
loop that collects a batch of requests. Imported by ``serve`` only when it starts a server (and by
each worker LitServe spawns), so that ``serve --help`` does not import LitServe."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from queue import Empty
from typing import Any

from litserve import LitAPI
from litserve.loops.simple_loops import BatchedLoop

from .io import UserError, one_line, user_error_in, write_json

# Requests one collection may take: the token budget (``--max_batch_tokens``) is what ends it; this
# only bounds it (and LitServe wants a number).
MAX_BATCH_REQUESTS = 1024


class PredictorAPI(LitAPI):
    """LitServe's hooks over one Predictor. A request is a record or a list of them; its answer is
    the record(s) ``predict`` writes, or 422 naming the record and field that is wrong. Requests
    are checked one by one, so that one bad request never fails the others of its batch."""

    def __init__(self, args: Any, info_path: Path):
        super().__init__(
            max_batch_size=MAX_BATCH_REQUESTS,
            batch_timeout=args.max_wait_ms / 1000,
            loop=TokenBudgetLoop(),
        )
        self.ckpt_path, self.runtime = str(args.ckpt_path), args.runtime
        self.max_batch_tokens, self.workers, self.info_path = args.max_batch_tokens, args.workers, info_path
        self.predictor = None
        # The examples ``length`` made of each request of the batch being collected, by the
        # request's id (with the request, so that the id stays its own): predict takes them.
        self.made: dict[int, tuple[Any, list]] = {}
        self.supervisor = os.getpid()  # made in the supervisor, which starts the workers

    def setup(self, device: str) -> None:
        from .runtime import exit_with_parent

        exit_with_parent(self.supervisor)  # first: loading the model takes seconds
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.workers))  # workers share the cores
        try:
            from .predictor import Predictor

            self.predictor = Predictor.load(self.ckpt_path, runtime=self.runtime)
            write_json(self.info_path, {"info": self.predictor.info()})
        except Exception as err:
            user_error = user_error_in(err)
            if user_error is None:
                raise
            # The supervisor prints this as one line; LitServe's traceback of it would only repeat it.
            write_json(self.info_path, {"error": one_line(user_error)})
            logging.getLogger("litserve.loops.loops").disabled = True
            raise
        if os.environ.get("LITSERVE_WORKER_ID", "0") == "0":
            print(f"ready: {self.predictor.task} model ({self.runtime})", flush=True)

    def length(self, payload: Any) -> int:
        """A queued request's tokens; a malformed one counts as a full batch: it waits for nothing."""
        records = payload if isinstance(payload, list) else [payload]
        try:
            examples = [self.predictor.adapter.example(r, position) for position, r in enumerate(records)]
            tokens = sum(self.predictor.example_length(e) for e in examples)
        except UserError:
            return self.max_batch_tokens
        self.made[id(payload)] = (payload, examples)
        return tokens

    # ``request`` has no annotation on purpose: LitServe reads it as the endpoint's request type
    # (none: the JSON body), and with postponed annotations even ``Any`` would turn it into a query field.
    def decode_request(self, request) -> tuple[bool, list, list | None]:
        made = self.made.pop(id(request), None)
        examples = made[1] if made is not None and made[0] is request else None
        return isinstance(request, list), request if isinstance(request, list) else [request], examples

    def batch(self, inputs: list) -> list:
        return inputs

    def predict(self, requests: list[tuple[bool, list, list | None]]) -> list[tuple[int, Any]]:
        # Each request's records are numbered within the request ("line", "index": as a file of
        # them would be), so the requests are made into examples one by one, run together (the
        # predictor's token-budget batches over all of them), and made into records one by one:
        # Predictor.__call__ split by request.
        adapter = self.predictor.adapter
        answers: list[tuple[int, Any] | None] = [None] * len(requests)
        mine: dict[int, list] = {}
        for i, (many, records, made) in enumerate(requests):
            if made is not None:  # made when the request was queued (``length``)
                mine[i] = made
                continue
            try:
                mine[i] = []
                for position, record in enumerate(records):
                    mine[i].append(adapter.example(record, position))
            except UserError as err:
                del mine[i]
                answers[i] = (
                    422,
                    {"error": f"record {position}: {one_line(err)}" if many else one_line(err)},
                )
        try:
            examples = [example for i in mine for example in mine[i]]
            outputs = dict(self.predictor.predict(examples, self.max_batch_tokens))
        except UserError:  # a record the examples let through: alone, each request fails or not on its own
            outputs = None
        start = 0
        for i, examples in mine.items():
            many = requests[i][0]
            try:
                if outputs is None:
                    predictions = [p for _, p in self.predictor.predict(examples, self.max_batch_tokens)]
                else:
                    predictions = [outputs[start + position] for position in range(len(examples))]
            except UserError as err:
                answers[i] = (422, {"error": one_line(err)})
                continue
            finally:
                start += len(examples)
            out = [
                adapter.record(position, e, p) for position, (e, p) in enumerate(zip(examples, predictions))
            ]
            answers[i] = (200, out if many else out[0])
        return answers

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output: tuple[int, Any]):
        from starlette.responses import JSONResponse

        return JSONResponse(output[1], status_code=output[0])


class TokenBudgetLoop(BatchedLoop):
    """LitServe's batched loop, collecting differently: its own polls the queue every millisecond
    and always waits the whole timeout. This one blocks until a request comes, then takes more for
    at most ``batch_timeout`` seconds, stopping early once ``max_batch_tokens`` are collected (the
    batch is full) and taking what is already queued without waiting once the time is up.

    It waits only while requests come together: when the one before arrived less than
    ``batch_timeout`` earlier, or one is already queued behind it. A request that comes alone (a
    lone client, whose next request follows the last answer) takes what is queued and runs at
    once, instead of paying the whole wait for company that does not come."""

    def __init__(self) -> None:
        super().__init__()
        self.last_arrival = float("-inf")  # when the latest request taken was queued (monotonic clock)

    def get_batch_requests(
        self, lit_api: PredictorAPI, request_queue: Any, transport: Any
    ) -> tuple[list, list]:
        from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
        from litserve.utils import LitAPIStatus, LoopResponseType

        payloads, timed_out, tokens, deadline, start = [], [], 0, None, None
        lit_api.made.clear()  # the last batch's: all taken, unless a request failed before predict
        while len(payloads) < lit_api.max_batch_size and tokens < lit_api.max_batch_tokens:
            wait = 1.0 if deadline is None else deadline - time.monotonic()
            try:
                item = request_queue.get(timeout=wait) if wait > 0 else request_queue.get_nowait()
            except Empty:
                break
            if item == _SENTINEL_VALUE:
                raise _StopLoopError()
            response_queue_id, uid, timestamp, payload = item
            # LitServe stamps a request with time.monotonic() when the HTTP process queues it: the
            # system's monotonic clock, the same in every process.
            start = start or time.monotonic()
            if timestamp - self.last_arrival < lit_api.batch_timeout:
                deadline = start + lit_api.batch_timeout  # requests come together: wait for more
            elif deadline is None:
                deadline = start  # alone so far: what is queued, and go
            self.last_arrival = max(self.last_arrival, timestamp)
            self.put_response(
                transport, response_queue_id, uid, (), LitAPIStatus.START, LoopResponseType.REGULAR
            )
            timeout = lit_api.request_timeout
            if timeout not in (-1, False) and time.monotonic() - timestamp > timeout:
                timed_out.append((response_queue_id, uid))
                continue
            payloads.append((response_queue_id, uid, payload))
            tokens += lit_api.length(payload)
        return payloads, timed_out
