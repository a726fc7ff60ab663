"""The tokenizer of a checkpoint: its spec (tokens, casing, evidence) and the one builder."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from bert_core import CheckpointError, TokenizerSpec, build_tokenizer, load_tokenizer, tokenizer_spec
from bert_core.vocab import read_vocab, read_vocab_tokens

from .test_bert_core import fixture_dir


def fixture_ids(tokenizer, info: dict) -> list[list[int]]:
    """The tokenizer's ids of the fixture's texts, with the fixture's [MASK] put in."""
    rows = []
    for row, text in enumerate(info["texts"]):
        ids = tokenizer(text["a"], text["b"])["input_ids"]
        for replacement in info["mask_replacements"]:  # the fixture masked "fox" for the MLM head
            if replacement["row"] == row:
                ids[replacement["position"]] = tokenizer.mask_token_id
        rows.append(ids)
    return rows


def expected_ids(info: dict) -> list[list[int]]:
    return [
        [i for i, m in zip(ids, mask) if m] for ids, mask in zip(info["input_ids"], info["attention_mask"])
    ]


def test_tokenizer_reproduces_fixture_ids():
    base = fixture_dir()
    info = json.loads((base / "expected_outputs.json").read_text())
    tokenizer = load_tokenizer(base / "tf_checkpoint")
    assert fixture_ids(tokenizer, info) == expected_ids(info)
    # the HF copy says do_lower_case in tokenizer_config.json; Google's directory is inferred from the vocab
    assert load_tokenizer(base / "hf")("Hello")["input_ids"] == tokenizer("Hello")["input_ids"]


def test_build_tokenizer_from_tokens_or_ids_is_load_tokenizer():
    base = fixture_dir()
    info = json.loads((base / "expected_outputs.json").read_text())
    vocab_path = base / "tf_checkpoint" / "vocab.txt"
    loaded = load_tokenizer(base / "tf_checkpoint")
    for vocab in (read_vocab_tokens(vocab_path), read_vocab(vocab_path)):
        built = build_tokenizer(vocab, do_lower_case=True, model_max_length=64)
        assert fixture_ids(built, info) == fixture_ids(loaded, info) == expected_ids(info)
        assert (
            built.get_vocab() == loaded.get_vocab()
            and built.model_max_length == loaded.model_max_length == 64
        )
    cased = build_tokenizer(read_vocab_tokens(vocab_path), do_lower_case=False)
    assert cased("The")["input_ids"][1] == 100 and cased.model_max_length == 512  # [UNK]: no "The" in it


def test_build_tokenizer_rejects_bad_vocabularies():
    with pytest.raises(CheckpointError, match=r"lacks the special token\(s\) \[UNK\], \[MASK\]"):
        build_tokenizer(["[PAD]", "[CLS]", "[SEP]", "the"], do_lower_case=True)
    with pytest.raises(TypeError, match="not a string"):
        build_tokenizer("[PAD]", do_lower_case=True)


def test_tokenizer_spec_reports_casing_and_evidence():
    base = fixture_dir()
    google = tokenizer_spec(base / "tf_checkpoint")
    assert isinstance(google, TokenizerSpec) and dataclasses.is_dataclass(google)
    assert (
        google.tokens == read_vocab_tokens(base / "tf_checkpoint" / "vocab.txt") and len(google.tokens) == 513
    )
    assert google.do_lower_case is True and google.model_max_length == 64
    assert google.evidence == "its vocab.txt has no upper-case tokens (an uncased vocabulary)"
    hf = tokenizer_spec(base / "hf", do_lower_case=True)
    assert hf.do_lower_case is True and "tokenizer_config.json says do_lower_case=True" in hf.evidence
    with pytest.raises(dataclasses.FrozenInstanceError):
        hf.do_lower_case = False


def test_tokenizer_spec_needs_vocab_and_special_tokens(tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(fixture_dir() / "tf_checkpoint", target)
    (target / "vocab.txt").chmod(0o644)
    tokens = read_vocab_tokens(target / "vocab.txt")
    (target / "vocab.txt").write_text("\n".join(t for t in tokens if t != "[MASK]") + "\n", encoding="utf-8")
    with pytest.raises(
        CheckpointError, match=r"vocab\.txt: special token\(s\) \[MASK\] missing from the vocabulary"
    ):
        tokenizer_spec(target)
    (target / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match="no vocab.txt, so no tokenizer can be built"):
        load_tokenizer(target)


# -- casing (moved from test_bert_core.py) ---------------------------------------------------------


def test_casing_contradiction_is_an_error():
    with pytest.raises(CheckpointError, match="do_lower_case=False contradicts"):
        load_tokenizer(fixture_dir() / "tf_checkpoint", do_lower_case=False)
    assert load_tokenizer(fixture_dir() / "tf_checkpoint", do_lower_case=True) is not None


def test_casing_from_google_directory_names(tmp_path):
    for name, lower in (("uncased_L-2_H-64_A-4", True), ("cased_L-2_H-64_A-4", False)):
        target = tmp_path / name
        shutil.copytree(fixture_dir() / "tf_checkpoint", target)
        tokenizer = load_tokenizer(target)
        assert tokenizer("The")["input_ids"][1] == (213 if lower else 100)  # "the" or [UNK]
        assert tokenizer_spec(target).evidence == f"the checkpoint is named '{name.lower()}'"
