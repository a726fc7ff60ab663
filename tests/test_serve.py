"""``python -m tasks serve``: one real server process (LitServe) on a free loopback port over a
tiny SST-2 checkpoint, asked as a client would: its records against ``predict``'s, /health and
/info, bad requests answered 4xx naming the field while it keeps serving, a flood past its tiny
queue answered 503 with Retry-After, and SIGTERM answering what is in flight before it exits 0.

One server for the SST-2 tests (each start loads torch and the model in a fresh worker process):
the SIGTERM test stops it, so it comes last of them. Then a QA server with two workers: bad
questions answered 4xx, then ``kill -9`` of its supervisor takes every process it started with it
(last: it stops that server)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import FAST_TRAINER_ARGS, ROOT, run_cli
from tests.test_predictor import QA_WINDOWS, fit

TEXTS = [
    "a warm, funny and moving film",
    "a dull, lifeless mess",
    "great",
    "the plot is thin but the acting carries it",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, path: str = "/predict", body: object = None, raw: bytes | None = None):
    """(status, headers, decoded JSON or text) of one request; POST when a body is given."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            status, headers, text = answer.status, answer.headers, answer.read().decode()
    except urllib.error.HTTPError as err:
        status, headers, text = err.code, err.headers, err.read().decode()
    try:
        return status, headers, json.loads(text)
    except ValueError:
        return status, headers, text


@contextlib.contextmanager
def started(checkpoint: Path, log_dir: Path, *options: str):
    """(url, process) of ``serve`` on ``checkpoint`` with ``options``, once /health answers; the whole
    tree killed after. In its own process group: the tree (LitServe's HTTP, manager and worker
    processes) is killed even if a test leaves it running."""
    port = free_port()
    log = (log_dir / "serve.log").open("w+")
    command = [sys.executable, "-m", "tasks", "serve", "--ckpt_path", str(checkpoint), "--port", str(port)]
    process = subprocess.Popen(
        [*command, *options], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if call(url, "/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        log.seek(0)
        pytest.fail(f"serve did not start: {log.read()[-3000:]}")
    try:
        yield url, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()


@pytest.fixture(scope="module")
def server(sst2_teacher_ckpt: Path, tmp_path_factory):
    """(url, process, checkpoint): ``serve`` with one place in its queue, batches of 8 tokens (one
    record each: every test record but "hi" fills one, and goes at once) and a long wait for company
    (5 s) for a request under that (a request in flight for the SIGTERM test)."""
    options = ["--max_queue", "1", "--max_batch_tokens", "8", "--max_wait_ms", "5000"]
    with started(sst2_teacher_ckpt, tmp_path_factory.mktemp("serve"), *options) as (url, process):
        yield url, process, sst2_teacher_ckpt


def test_records_equal_predicts_and_health_and_info(server, tmp_path: Path):
    url, _, checkpoint = server
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    args = [
        "predict",
        "--ckpt_path",
        checkpoint,
        "--data.predict_file",
        texts,
        "--data.predictions_file",
        out,
    ]
    assert run_cli(*args, "--trainer.default_root_dir", tmp_path / "run", *FAST_TRAINER_ARGS) == 0
    predicted = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]

    status, _, served = call(url, body=[{"text": t} for t in TEXTS])  # a list: a file of these lines
    assert status == 200 and len(served) == len(predicted) == len(TEXTS)
    status, _, single = call(url, body={"text": TEXTS[0]})  # one record: predict's first line
    assert status == 200 and isinstance(single, dict)
    for ours, theirs in zip([*served, single], [*predicted, predicted[0]]):
        assert ours.keys() == theirs.keys()
        assert {k: v for k, v in ours.items() if k != "probabilities"} == {
            k: v for k, v in theirs.items() if k != "probabilities"
        }
        assert ours["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-5)

    assert call(url, "/health")[:3:2] == (200, "ok")
    status, _, info = call(url, "/info")
    assert status == 200 and info["task"] == "classification"
    assert len(info["labels"]) == 2 and {r["label"] for r in predicted} <= set(info["labels"])
    assert info["model"] == str(checkpoint) and info["runtime"] == "torch"
    assert info["versions"]["torch"]


BAD_REQUESTS = [  # (body, status, what the message names)
    (b'{"text": "unfinished', 400, "not JSON"),
    (b'"a bare string"', 422, "record (JSON object)"),
    (b"[]", 422, "empty list"),
    (b'{"txt": "a typo"}', 422, "text"),
    (b'{"text": 42}', 422, "text"),
    (b'{"text": ["a", "list"]}', 422, "text"),
    (b'{"text": "   "}', 422, "text"),
    (b'{"text": "one", "text_pair": "two"}', 422, "text_pair"),
    (b'[{"text": "fine"}, {"text": null}]', 422, "record 1: text"),
    (b'[{"text": "fine"}, 7]', 422, "record 1"),
    (json.dumps({"text": "a" * 1_000_000}).encode(), 413, "field 'text'"),
    (b"[" + b",".join([b'{"text": "x"}'] * 1025) + b"]", 413, "1025 records"),
]


def test_bad_requests_get_a_4xx_naming_the_field_and_the_server_keeps_serving(server):
    url = server[0]
    for body, expected, named in BAD_REQUESTS:
        status, _, answer = call(url, raw=body)
        assert (status, named in answer.get("error", "")) == (expected, True), (body[:60], status, answer)
    status, _, answer = call(url, body={"text": TEXTS[0]})
    assert status == 200 and answer["label"]


def test_a_flood_gets_503_with_retry_after_and_sigterm_answers_what_is_in_flight(server):
    """A request shorter than the batch's token budget, less than ``--max_wait_ms`` (5 s) after
    the one before, waits that long for company in the worker: in flight, holding the one place of
    the queue, without using the CPU. A flood then gets 503s at once; SIGTERM comes while it waits (checked just before: on a loaded machine
    the flood may outlast the wait, and the round is tried again), and it is still answered."""
    url, process, _ = server
    flood: list[tuple[int, object, object]] = []
    for _ in range(3):
        waiting: list[tuple[int, object, float]] = []

        def short_request(waiting: list = waiting) -> None:
            status = 503
            while status == 503:  # a probe below may hold the place for a moment
                status, _, answer = call(url, body={"text": "hi"})  # 3 tokens, under the budget of 8
            waiting.append((status, answer, time.monotonic()))

        thread = threading.Thread(target=short_request)
        thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and call(url, body={"text": TEXTS[0]})[0] != 503:
            time.sleep(0.05)  # until the short request holds the queue's one place
        flooders = [
            threading.Thread(target=lambda: flood.append(call(url, body={"text": TEXTS[1]})))
            for _ in range(6)
        ]
        for flooder in flooders:
            flooder.start()
        for flooder in flooders:
            flooder.join()
        if call(url, body={"text": TEXTS[0]})[0] == 503:  # still in flight: now
            break
        thread.join(60)
    else:
        pytest.fail("the short request was never in flight long enough")
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    refused = [(headers.get("Retry-After"), answer) for status, headers, answer in flood if status == 503]
    assert refused and all(after == "1" and "--max_queue" in answer["error"] for after, answer in refused)
    assert {status for status, _, _ in flood} <= {200, 503}
    thread.join(60)
    [(status, answer, answered)] = waiting
    assert status == 200 and answer["text"] == "hi" and answer["label"]
    assert answered > signalled  # in flight when the signal came, and answered
    assert process.wait(60) == 0
    with pytest.raises(OSError):
        call(url, "/health")


@pytest.fixture(scope="module")
def qa_server(mixing_bert_dir: Path, tmp_path_factory):
    """(url, process, checkpoint): ``serve --workers 2`` on a tiny SQuAD 2.0 checkpoint (one step).
    Started once the SST-2 server is stopped (its tests come first): one server at a time."""
    run = tmp_path_factory.mktemp("qa")
    checkpoint = fit(run / "run", "squad_v2.yaml", mixing_bert_dir, *QA_WINDOWS)
    with started(checkpoint, run, "--workers", "2") as (url, process):
        yield url, process, checkpoint


QUESTION = json.loads((ROOT / "data" / "squad" / "predict.jsonl").read_text(encoding="utf-8").splitlines()[0])
BAD_QA_REQUESTS = [  # (record(s), what the message names)
    ({"question": QUESTION["question"]}, "context: missing"),
    ({"context": QUESTION["context"]}, "question: missing"),
    ({"question": 7, "context": QUESTION["context"]}, "question: a string expected"),
    ({"question": ["who?"], "context": QUESTION["context"]}, "question: a string expected"),
    ({"question": QUESTION["question"], "context": " "}, "context: empty"),
    ([QUESTION, {"question": QUESTION["question"]}], "record 1: context"),
]


def test_bad_qa_requests_get_a_4xx_naming_the_field_and_the_server_keeps_serving(qa_server, tmp_path: Path):
    url, _, checkpoint = qa_server
    for body, named in BAD_QA_REQUESTS:
        status, _, answer = call(url, body=body)
        assert (status, named in answer.get("error", "")) == (422, True), (body, status, answer)
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps(QUESTION) + "\n", encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    args = ["predict", "--ckpt_path", checkpoint, "--data.predict_file", questions]
    assert run_cli(*args, "--data.predictions_file", out, "--trainer.default_root_dir", tmp_path) == 0
    [predicted] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    status, _, served = call(url, body=QUESTION)
    assert status == 200 and served.keys() == predicted.keys() and served["id"] == QUESTION["id"]
    assert {k: v for k, v in served.items() if k != "score"} == {
        k: v for k, v in predicted.items() if k != "score"
    }
    assert served["score"] == pytest.approx(predicted["score"], abs=1e-5)


def test_a_sigkilled_supervisor_takes_every_process_it_started_with_it(qa_server):
    """LitServe's manager, HTTP (forked) and inference (spawned) processes, and multiprocessing's
    resource tracker, all gone within 10 s of ``kill -9`` of ``serve``: none is left serving the
    port or holding a model. A process that has exited but is not reaped (its parent gone, the
    container's init not reaping) counts as gone."""
    psutil = pytest.importorskip("psutil")
    url, process, _ = qa_server
    descendants = psutil.Process(process.pid).children(recursive=True)
    assert len(descendants) >= 5, descendants  # 2 HTTP, 2 inference, the manager (and the tracker)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed = time.monotonic()

    def running(child) -> bool:
        try:
            return child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    while (left := [c for c in descendants if running(c)]) and time.monotonic() < killed + 10:
        time.sleep(0.1)
    assert not left, [(c.pid, c.name(), c.cmdline()[-3:]) for c in left]
    with pytest.raises(OSError):
        call(url, "/health")


ORPHAN = """import signal, sys, time, tasks.runtime as runtime
runtime.ORPHAN_GRACE_S = 0.5
if sys.argv[2] == "fallback":
    runtime.PR_SET_PDEATHSIG = -1  # prctl refuses it: the polling thread alone
if sys.argv[2] == "ignored":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a SIGTERM that does not stop it: the grace ends it
runtime.exit_with_parent(int(sys.argv[1]))
print("armed", flush=True)
time.sleep(60)
"""
PARENT = "import os, subprocess, sys, time; subprocess.Popen([sys.executable, '-c', sys.argv[1], str(os.getpid()), sys.argv[2]]); time.sleep(60)"


@pytest.mark.parametrize("how", ["pdeathsig", "fallback", "ignored"])
def test_exit_with_parent_ends_the_orphan(how: str):
    """``exit_with_parent`` alone, on a parent and child that do nothing else: the kernel's SIGTERM,
    the polling thread's SIGTERM where prctl is refused, and the exit after the grace where SIGTERM
    is ignored all end the child soon after its parent is SIGKILLed."""
    psutil = pytest.importorskip("psutil")
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, ORPHAN, how], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    child = None
    try:
        assert parent.stdout.readline() == "armed\n"
        [child] = psutil.Process(parent.pid).children()
        parent.kill()
        parent.wait()
        killed = time.monotonic()
        with contextlib.suppress(psutil.NoSuchProcess):
            while child.status() != psutil.STATUS_ZOMBIE and time.monotonic() < killed + 5:
                time.sleep(0.05)
            assert child.status() == psutil.STATUS_ZOMBIE, f"{how}: alive 5 s after its parent"
    finally:
        parent.kill()
        parent.wait()
        with contextlib.suppress(psutil.NoSuchProcess, AttributeError):
            child.kill()


def test_serve_imports_no_lightning_and_its_supervisor_no_torch():
    """The supervisor and HTTP processes import ``tasks.serve`` and LitServe (with our worker's
    classes, which LitServe pickles): no torch there; the workers add the predictor: no Lightning."""
    code = (
        "import sys, tasks.serve, tasks.serve_worker; assert 'torch' not in sys.modules, 'torch'; "
        "import tasks.predictor; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_a_batch_of_requests_is_made_into_examples_once_and_answers_as_the_predictor(sst2_teacher_ckpt: Path):
    """The worker's path in process, as its loop drives it (``length`` when a request is queued,
    then ``decode_request`` and ``predict``): each record is made into an example once, the
    answers are ``Predictor.__call__``'s records, and a bad request fails alone."""
    from tasks.predictor import Predictor
    from tasks.serve_worker import PredictorAPI

    api = PredictorAPI.__new__(PredictorAPI)  # the hooks without LitServe's server around them
    api.predictor, api.max_batch_tokens, api.made = Predictor.load(str(sst2_teacher_ckpt)), 4096, {}
    made = []
    example = api.predictor.adapter.example
    api.predictor.adapter.example = lambda record, position: (
        made.append(position) or example(record, position)
    )
    payloads = [{"text": "a warm film"}, [{"text": "dull"}, {"text": "fun", "index": "x"}], {"text": ""}]
    for payload in payloads:
        api.length(payload)
    answers = api.predict([api.decode_request(payload) for payload in payloads])
    assert made == [0, 0, 1, 0, 0]  # the bad request's example, tried again alone, fails again
    expected = (
        api.predictor([{"text": "a warm film"}])[0],
        api.predictor([{"text": "dull"}, {"text": "fun", "index": "x"}]),
    )
    assert [status for status, _ in answers[:2]] == [200, 200]
    for got, want in zip([answers[0][1], *answers[1][1]], [expected[0], *expected[1]]):
        # the same record; its probabilities to float rounding (run in another batch: other shapes)
        assert {**got, "probabilities": None} == {**want, "probabilities": None}
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=2e-6)
    assert answers[2] == (422, {"error": "text: empty"})
