"""The plain predictor (``tasks.predictor``) and the Lightning-free ``predict``: the records of the
Lightning predict path, record for record, for every task kind; no Lightning imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tasks.cli  # noqa: F401  (Lightning's log handler binds to the stderr of its import)
from tasks.io import UserError
from tasks.plain_predict import FORCE_LIGHTNING, plain_predict
from tasks.predictor import Predictor
from tests.conftest import FAST_TRAINER_ARGS as FAST
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

QUICK = [
    "--trainer.max_steps",
    "1",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.num_sanity_val_steps",
    "0",
]
QA_WINDOWS = ["--data.max_seq_length", "64", "--data.max_query_length", "24", "--data.doc_stride", "24"]
TEXTS = [
    "a warm , funny and moving film",
    "",
    "dull",
    "the plot is thin but the actors are great fun to watch , and John Smith flew from Paris to Berlin",
    "Ünïcödé café in 東京 with the European Union",
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def fit(run_dir: Path, config: str, pretrained: Path, *extra: str) -> Path:
    args = ["fit", "--config", ROOT / "configs" / config, "--model.pretrained", pretrained]
    assert run_cli(*args, "--trainer.default_root_dir", run_dir, *QUICK, *FAST, *extra) == 0
    return run_dir / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def ner_ckpt(mixing_bert_dir: Path, tmp_path_factory) -> Path:
    return fit(tmp_path_factory.mktemp("ner") / "run", "ner.yaml", mixing_bert_dir)


@pytest.fixture(scope="module")
def qa_ckpt(mixing_bert_dir: Path, tmp_path_factory) -> Path:
    return fit(tmp_path_factory.mktemp("qa") / "run", "squad_v2.yaml", mixing_bert_dir, *QA_WINDOWS)


def predict_both(ckpt: Path, predict_file: Path, root: Path, monkeypatch, *extra: str) -> tuple[Path, Path]:
    """The default predict folder of the plain path and of the Lightning path (forced)."""
    args = ["predict", "--ckpt_path", ckpt, "--data.predict_file", predict_file, *FAST, *extra]
    assert run_cli(*args, "--trainer.default_root_dir", root / "plain") == 0
    with monkeypatch.context() as forced:
        forced.setenv(FORCE_LIGHTNING, "lightning")
        assert run_cli(*args, "--trainer.default_root_dir", root / "lightning") == 0
    folder = Path("predict") / predict_file.stem
    return root / "plain" / folder, root / "lightning" / folder


def assert_same_files(plain: Path, lightning: Path) -> None:
    """The same files; those with records hold the same records (config.predict.yaml aside)."""
    names = sorted(p.name for p in lightning.iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in plain.iterdir() if not p.name.startswith(".")) == names
    for name in names:
        if name != "config.predict.yaml":
            assert (plain / name).read_bytes() == (lightning / name).read_bytes(), name


def test_importing_the_predictor_imports_no_lightning():
    code = (
        "import sys, tasks.predictor, tasks.plain_predict, tasks.cli\n"
        "heavy = [m for m in ('lightning', 'pytorch_lightning', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_classification_equals_lightning_predict(sst2_teacher_ckpt: Path, tmp_path: Path, monkeypatch):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    plain, lightning = predict_both(sst2_teacher_ckpt, texts, tmp_path, monkeypatch)
    assert_same_files(plain, lightning)  # predictions.jsonl and GLUE's SST-2.tsv
    expected = read_jsonl(lightning / "predictions.jsonl")
    predictor = Predictor.load(str(sst2_teacher_ckpt))
    got = predictor([{"text": t} for t in TEXTS if t])
    want = [r for r in expected if r["text"]]
    assert [r["label"] for r in got] == [r["label"] for r in want]
    for mine, theirs in zip(got, want, strict=True):
        assert mine["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-5)
    # a token budget that groups the inputs otherwise: the same records (to float rounding)
    regrouped = predictor([{"text": t} for t in TEXTS if t], max_batch_tokens=16)
    assert [r["label"] for r in regrouped] == [r["label"] for r in got]
    for mine, theirs in zip(regrouped, got, strict=True):
        assert mine["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-5)
    info = predictor.info()
    assert (info["task"], info["labels"], info["runtime"]) == (
        "classification",
        ["negative", "positive"],
        "torch",
    )
    assert predictor.length({"text": "dull"}) == 3  # [CLS] dull [SEP]


def test_ner_equals_lightning_predict(ner_ckpt: Path, tmp_path: Path, monkeypatch):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    plain, lightning = predict_both(ner_ckpt, texts, tmp_path, monkeypatch)
    assert_same_files(plain, lightning)
    expected = read_jsonl(lightning / "predictions.jsonl")
    assert Predictor.load(str(ner_ckpt))([{"text": t} for t in TEXTS if t]) == [
        r for r in expected if r["text"]
    ]


def test_qa_equals_lightning_predict(qa_ckpt: Path, tmp_path: Path, monkeypatch):
    questions = ROOT / "data" / "squad" / "predict.jsonl"
    plain, lightning = predict_both(qa_ckpt, questions, tmp_path, monkeypatch)
    expected = read_jsonl(lightning / "predictions.jsonl")
    assert read_jsonl(plain / "predictions.jsonl") == expected
    records = [json.loads(line) for line in questions.read_text().splitlines() if line.strip()]
    got = Predictor.load(str(qa_ckpt))(records)
    assert [(r["id"], r["answer"], r["start"], r["end"]) for r in got] == [
        (r["id"], r["answer"], r["start"], r["end"]) for r in expected
    ]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected], abs=1e-5)


def test_features_equal_lightning_predict(mixing_bert_dir: Path, tmp_path: Path):
    import numpy as np

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(t for t in TEXTS if t) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    args = ["predict", "--config", ROOT / "configs" / "features.yaml", "--model.pretrained", mixing_bert_dir]
    assert run_cli(*args, "--data.predict_file", texts, "--data.predictions_file", out, *FAST) == 0
    got = Predictor.load(str(mixing_bert_dir))([{"text": t} for t in TEXTS if t])
    assert np.allclose(np.array([r["vector"] for r in got]), np.load(out), atol=1e-5)


def test_bad_records_name_the_field(sst2_teacher_ckpt: Path, qa_ckpt: Path):
    predictor = Predictor.load(str(sst2_teacher_ckpt))
    for record, field in [({}, "text"), ({"text": ""}, "text"), ({"text": 3}, "text"), ([], "record")]:
        with pytest.raises(UserError, match=field):
            predictor.check(record)
    with pytest.raises(UserError, match="text_pair"):
        predictor.check({"text": "a", "text_pair": "b"})  # SST-2 takes single texts
    with pytest.raises(UserError, match="context"):
        Predictor.load(str(qa_ckpt)).check({"question": "who?"})


def test_the_same_error_both_ways(sst2_teacher_ckpt: Path, tmp_path: Path, monkeypatch, capfd):
    bad = tmp_path / "bad.txt"
    bad.write_text("one text\na\tpair\n", encoding="utf-8")
    args = ["predict", "--ckpt_path", sst2_teacher_ckpt, "--data.predict_file", bad, *FAST]
    capfd.readouterr()
    assert run_cli(*args, "--trainer.default_root_dir", tmp_path / "a") == 2
    plain = capfd.readouterr().err.strip().splitlines()[-1]
    monkeypatch.setenv(FORCE_LIGHTNING, "lightning")
    assert run_cli(*args, "--trainer.default_root_dir", tmp_path / "b") == 2
    assert capfd.readouterr().err.strip().splitlines()[-1] == plain
    assert plain.startswith("error: ") and "bad.txt" in plain
    assert not list((tmp_path / "a").rglob("predictions.jsonl"))


def test_lightning_options_go_the_lightning_way(sst2_teacher_ckpt: Path, tmp_path: Path):
    texts = tmp_path / "t.txt"
    texts.write_text("fine\n")
    base = ["predict", "--ckpt_path", str(sst2_teacher_ckpt), "--data.predict_file", str(texts)]
    for extra in (
        ["--trainer.limit_predict_batches", "1"],
        ["--trainer.devices", "2"],
        ["--config", "configs/sst2.yaml"],
        ["--model.quantize_backend", "torchao"],
    ):
        assert plain_predict(base + extra) is None, extra


def test_plain_tokenizer_is_transformers_tokenizer(sst2_teacher_ckpt: Path):
    """The same Rust tokenizer, built without importing transformers."""
    from bert_core.plain_tokenizer import PlainTokenizer
    from bert_core.vocab import vocab_ids
    from tasks.source import Source

    source = Source(sst2_teacher_ckpt)
    payload = source.stored()["payload"]
    theirs = source.tokenizer()
    ours = PlainTokenizer(vocab_ids(payload["vocab"], warn=False), payload["do_lower_case"], 512)
    assert json.loads(ours.backend_tokenizer.to_str()) == json.loads(theirs.backend_tokenizer.to_str())
    words = [t.split() for t in TEXTS if t]
    plain = {"add_special_tokens": False, "verbose": False}
    mine, want = (
        ours(words, is_split_into_words=True, **plain),
        theirs(words, is_split_into_words=True, **plain),
    )
    assert mine["input_ids"] == [list(ids) for ids in want["input_ids"]]
    assert [mine.word_ids(i) for i in range(len(words))] == [want.word_ids(i) for i in range(len(words))]


def test_a_config_of_settings_the_plain_path_honours_goes_the_plain_way(
    sst2_teacher_ckpt: Path, tmp_path: Path, monkeypatch
):
    """``predict --config`` of the config.predict.yaml a predict wrote (checkpoint, input, token
    budget: in the config alone): the plain path runs it, with the Lightning path's files. The same
    config with one setting the plain path does not honour goes the Lightning way."""
    import yaml

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    first = ["predict", "--ckpt_path", sst2_teacher_ckpt, "--data.predict_file", texts]
    first += ["--data.eval_tokens_per_batch", "16", *FAST, "--trainer.default_root_dir", tmp_path / "first"]
    assert run_cli(*first) == 0
    config = tmp_path / "first" / "predict" / "texts" / "config.predict.yaml"
    args = ["predict", "--config", config, *FAST]
    assert run_cli(*args, "--trainer.default_root_dir", tmp_path / "plain") == 0
    with monkeypatch.context() as forced:
        forced.setenv(FORCE_LIGHTNING, "lightning")
        assert run_cli(*args, "--trainer.default_root_dir", tmp_path / "lightning") == 0
    plain, lightning = (tmp_path / way / "predict" / "texts" for way in ("plain", "lightning"))
    assert_same_files(plain, lightning)
    ran = [(folder / "config.predict.yaml").read_text(encoding="utf-8") for folder in (plain, lightning)]
    assert [text.startswith("# predict without Lightning") for text in ran] == [True, False]
    assert yaml.safe_load(ran[0])["data"]["init_args"]["eval_tokens_per_batch"] == 16  # the config's

    for key, value in [
        (("data", "init_args", "max_seq_length"), 32),  # a data setting the checkpoint's settings fix
        (("model", "init_args", "pretrained"), "all-MiniLM-L6-v2"),  # another model than the checkpoint
        (("model", "class_path"), "tasks.tagging.TaggingModule"),  # another task's class
        (("data", "class_path"), None),  # no data class: Lightning's error
        (("trainer", "devices"), 2),
        (("trainer", "callbacks"), []),
        (("seed_everything",), 1),
    ]:
        changed = yaml.safe_load(config.read_text(encoding="utf-8"))
        section = changed
        for name in key[:-1]:
            section = section.setdefault(name, {})
        section[key[-1]] = value
        if value is None:
            del section[key[-1]]
        variant = tmp_path / f"{'.'.join(key)}.yaml"
        variant.write_text(yaml.safe_dump(changed), encoding="utf-8")
        run = ["--trainer.default_root_dir", str(tmp_path / "variant")]  # where a wrong plain run writes
        assert plain_predict(["predict", "--config", str(variant), *FAST, *run]) is None, key


def test_load_reads_the_checkpoint_once_and_maps_its_weights(sst2_teacher_ckpt: Path, monkeypatch):
    """What the checkpoint stores and its weights come from one unpickling of the file (pure Python
    under weights_only: a third of a second for a MiniLM checkpoint), and the encoder's parameters
    are its tensors in the file's mapped pages, not copies of them."""
    import tasks.checkpoint as checkpoint

    reads: list[str] = []
    real = checkpoint.load_mapped
    monkeypatch.setattr(checkpoint, "load_mapped", lambda path: reads.append(str(path)) or real(path))
    checkpoint._load.cache_clear()
    predictor = Predictor.load(str(sst2_teacher_ckpt), map_weights=True)
    assert len(reads) == 1

    def in_the_file(parameters: list) -> list[bool]:
        mapped = []
        for line in Path("/proc/self/maps").read_text().splitlines():
            if line.endswith(str(Path(sst2_teacher_ckpt).resolve())):
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                mapped.append((start, end))
        return [any(a <= p.data_ptr() < b for a, b in mapped) for p in parameters]

    parameters = list(predictor.run.encoder.parameters())
    assert parameters and all(in_the_file(parameters))
    weights = checkpoint.read_weights(sst2_teacher_ckpt)["state_dict"]
    assert all(v.equal(weights[f"encoder.{k}"]) for k, v in predictor.run.encoder.state_dict().items())
    # by default (serve: a long-lived process) the parameters are copies, out of the file's pages
    copied = Predictor.load(str(sst2_teacher_ckpt))
    assert not any(in_the_file(list(copied.run.encoder.parameters())))


def test_vocab_is_stored_as_one_string_and_listed_vocabularies_still_read(sst2_teacher_ckpt, tmp_path):
    """New checkpoints store the vocabulary as one string (fast to unpickle); those that store a
    list (earlier versions, or a token with a newline) read and predict the same."""
    import torch

    from tasks.checkpoint import pack_vocab, read_checkpoint

    raw = torch.load(sst2_teacher_ckpt, weights_only=True)
    packed = raw["bert_tasks"]["vocab"]
    assert isinstance(packed, str)
    listed = tmp_path / "listed.ckpt"
    raw["bert_tasks"]["vocab"] = packed.split("\n")
    torch.save(raw, listed)
    vocab = read_checkpoint(sst2_teacher_ckpt)["payload"]["vocab"]
    assert vocab == read_checkpoint(listed)["payload"]["vocab"] == packed.split("\n")
    assert len(vocab) == raw["bert_tasks"]["bert_config"]["vocab_size"]
    records = [{"text": t} for t in TEXTS if t]
    assert Predictor.load(str(listed))(records) == Predictor.load(str(sst2_teacher_ckpt))(records)
    assert pack_vocab(["[PAD]", "a\nb"]) == ["[PAD]", "a\nb"]  # a split would shift the ids
