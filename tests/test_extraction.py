"""Feature extraction through the CLI: vectors against transformers' hidden states, Google's layer
indexing, per-word vectors, Google's JSONL layout, the index file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from bert_core import load_tokenizer

from .conftest import ROOT, run_cli

CONFIG = ROOT / "configs" / "features.yaml"
FAST = ["--trainer.enable_progress_bar", "false"]
LINES = [
    "The river rises every spring.",
    "",
    "Short one",
    "A considerably longer line, with punctuation; and unusual words like sourdough and reservoir!",
]


@pytest.fixture(scope="module")
def reference(mixing_bert_dir):
    """transformers' hidden states for each line alone (no padding): (embeddings, layer 1, layer 2)."""
    from transformers import BertModel

    model = BertModel.from_pretrained(mixing_bert_dir).eval()
    tokenizer = load_tokenizer(mixing_bert_dir)

    def states(text: str, pair: str | None = None):
        args = (text.split(),) if pair is None else (text.split(), pair.split())
        encoding = tokenizer(*args, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            out = model(**encoding, output_hidden_states=True)
        return [h[0].numpy() for h in out.hidden_states], encoding

    return states


def extract(tmp_path, model_dir, lines, output, *options):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(lines) + "\n")
    args = [
        "predict",
        "--config",
        CONFIG,
        "--model.pretrained",
        model_dir,
        "--data.predict_file",
        source,
        *FAST,
    ]
    args += ["--data.predictions_file", tmp_path / output, "--trainer.default_root_dir", tmp_path / "run"]
    # small token-budget batches: several batches, each longest first, written back in input order
    args += ["--data.eval_tokens_per_batch", "32", "--data.cache_dir", tmp_path / "cache", *options]
    assert run_cli(*args) == 0
    return tmp_path / output


@pytest.mark.parametrize(
    "pooling, layers, combine",
    [
        ("mean", "[-1]", "concat"),
        ("cls", "[-1,-2]", "concat"),
        ("max", "[0,-1]", "mean"),
        ("mean", "[-2,-1]", "sum"),
    ],
)
def test_pooled_vectors_equal_transformers_hidden_states(
    tmp_path, mixing_bert_dir, reference, pooling, layers, combine
):
    path = extract(
        tmp_path, mixing_bert_dir, LINES, "out.npy",
        "--model.pooling", pooling, "--model.layers", layers, "--model.combine", combine,
    )  # fmt: skip
    vectors = np.load(path)
    wanted = [{"-1": 2, "-2": 1, "0": 0}[x] for x in layers.strip("[]").split(",")]
    assert vectors.shape == (len(LINES), 32 * (len(wanted) if combine == "concat" else 1))
    for i, line in enumerate(LINES):
        states, _ = reference(line)
        chosen = [states[k] for k in wanted]  # each [T, H]
        joined = np.concatenate(chosen, -1) if combine == "concat" else sum(chosen)
        joined = joined / len(chosen) if combine == "mean" else joined
        expected = {"mean": joined.mean(0), "cls": joined[0], "max": joined.max(0)}[pooling]
        np.testing.assert_allclose(vectors[i], expected, atol=1e-5, rtol=0)
    index = [json.loads(line) for line in (tmp_path / "out.index.jsonl").read_text().splitlines()]
    assert [r["line"] for r in index] == [1, 2, 3, 4]
    assert [r["text"] for r in index] == LINES
    assert [r["words"] for r in index] == [len(line.split()) for line in LINES]


@pytest.mark.parametrize("word_vector", ["first", "mean"])
def test_per_word_vectors_align_to_whitespace_words(tmp_path, mixing_bert_dir, reference, word_vector):
    path = extract(
        tmp_path, mixing_bert_dir, LINES, "words.safetensors", "--model.pooling", "none",
        "--model.word_vector", word_vector, "--model.layers", "[-1]",
    )  # fmt: skip
    tensors = load_file(path)
    offsets, vectors = tensors["offsets"], tensors["vectors"]
    assert offsets.tolist() == list(np.cumsum([0] + [len(line.split()) for line in LINES]))
    for i, line in enumerate(LINES):
        states, encoding = reference(line)
        last = states[2]
        word_ids = encoding.word_ids(0)
        for w in range(len(line.split())):
            positions = [t for t, x in enumerate(word_ids) if x == w]
            expected = last[positions[0]] if word_vector == "first" else last[positions].mean(0)
            np.testing.assert_allclose(vectors[offsets[i] + w], expected, atol=1e-5, rtol=0)


def test_pairs_and_googles_jsonl_layout(tmp_path, mixing_bert_dir, reference):
    pairs = ["A man is eating.\tSomeone eats food.", "The sky\tis blue today"]
    path = extract(
        tmp_path, mixing_bert_dir, pairs, "google.jsonl", "--data.features_format", "google_jsonl",
        "--model.layers", "[-1,-2,0]",
    )  # fmt: skip
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["linex_index"] for r in records] == [0, 1]
    tokenizer = load_tokenizer(mixing_bert_dir)
    for record, line in zip(records, pairs):
        states, encoding = reference(*line.split("\t"))
        tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"][0])
        assert [f["token"] for f in record["features"]] == tokens
        for t, feature in enumerate(record["features"]):
            assert [layer["index"] for layer in feature["layers"]] == [-1, -2, 0]
            for layer, k in zip(feature["layers"], (2, 1, 0)):
                np.testing.assert_allclose(layer["values"], states[k][t], atol=2e-6, rtol=0)
    index = [json.loads(line) for line in (tmp_path / "google.index.jsonl").read_text().splitlines()]
    assert index[0]["text_pair"] == "Someone eats food." and index[0]["words"] == 7


def test_extraction_refuses_fit_and_bad_options(tmp_path, mixing_bert_dir, capsys):
    base = [
        "--config",
        CONFIG,
        "--model.pretrained",
        mixing_bert_dir,
        "--trainer.default_root_dir",
        tmp_path / "r",
    ]
    assert run_cli("fit", *base) == 2
    assert "feature extraction only predicts" in capsys.readouterr().err
    assert run_cli("predict", *base, "--model.pooling", "avg") == 2
    assert "--model.pooling must be one of cls, mean, max, none" in capsys.readouterr().err
    assert run_cli("predict", *base, "--model.layers", "[-4]") == 2
    assert "layer -4 does not exist" in capsys.readouterr().err
    wrong = ["--model.pooling", "none", "--data.predictions_file", tmp_path / "out.npy"]
    assert run_cli("predict", *base, *wrong) == 2
    assert "name the file out.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out.npy").exists()
