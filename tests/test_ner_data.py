"""The tagging data module: label sets, scheme conversion, unseen tags, predictions and their offsets."""

import json
from pathlib import Path

import pytest

from tasks.data.conll import read_conll
from tasks.io import DataError, UserError
from tasks.data.conll import conll_lines_with_predictions
from tasks.data.words import split_words, text_records
from tasks.tagging import TaggingDataModule, TaggingModule

IOB1_TRAIN = "-DOCSTART- -X- O\n\nEU NNP I-ORG\nrejects VBZ O\nGerman JJ I-MISC\ncall NN O\n\nPeter NNP I-PER\nBlackburn NNP I-PER\n"


def datamodule(tmp_path: Path, train: str, dev: str | None = None, **options) -> TaggingDataModule:
    (tmp_path / "train.conll").write_text(train, encoding="utf-8")
    if dev is not None:
        (tmp_path / "dev.conll").write_text(dev, encoding="utf-8")
        options["validation_file"] = str(tmp_path / "dev.conll")
    return TaggingDataModule(train_file=str(tmp_path / "train.conll"), **options)


def test_iob1_file_trains_as_bio_or_iobes(tmp_path):
    bio = datamodule(tmp_path, IOB1_TRAIN)
    assert bio.label_names == ["O", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert bio.read("train").gold == [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"]]
    iobes = datamodule(tmp_path, IOB1_TRAIN, tag_scheme="iobes")
    assert iobes.label_names[:5] == ["O", "B-MISC", "I-MISC", "E-MISC", "S-MISC"]
    assert iobes.read("train").gold == [["S-ORG", "O", "S-MISC", "O"], ["B-PER", "E-PER"]]


def test_unseen_tag_in_dev_is_an_error_naming_file_and_line_or_o_by_option(tmp_path):
    dev = "Anna B-PER\nlikes O\nIkea B-ORG\n"
    strict = datamodule(tmp_path, "Bob B-PER\nruns O\n", dev)
    with pytest.raises(
        DataError, match=r"dev.conll:3: tag 'B-ORG': type 'ORG' is not in the train file's label set"
    ):
        strict.read("validation")
    lenient = datamodule(tmp_path, "Bob B-PER\nruns O\n", dev, unseen_tags="map_to_o")
    assert lenient.read("validation").gold == [["B-PER", "O", "O"]]


def test_unknown_scheme_and_untagged_train_file_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown tag scheme 'BILOU'"):
        TaggingDataModule(tag_scheme="BILOU")
    with pytest.raises(DataError, match=r"train.conll:1: no tag column"):
        _ = datamodule(tmp_path, "just\nwords\n").label_names


def test_labels_from_a_checkpoint_decide_iobes(tmp_path):
    assert TaggingDataModule(labels=["O", "B-X", "I-X", "E-X", "S-X"]).tag_scheme == "IOBES"
    assert TaggingDataModule(labels=["O", "B-X", "I-X"], tag_scheme="IOB1").tag_scheme == "IOB1"
    with pytest.raises(UserError, match="labels must be"):
        TaggingDataModule(labels=["B_X"])


def test_split_words_offsets_hand_computed():
    text = 'Dr. Okafor\'s team (Lagos) won $5, said "Ann".'
    words = [text[a:b] for a, b in split_words(text)]
    assert words == [
        "Dr",
        ".",
        "Okafor",
        "'s",
        "team",
        "(",
        "Lagos",
        ")",
        "won",
        "$",
        "5",
        ",",
        "said",
        '"',
        "Ann",
        '"',
        ".",
    ]
    assert split_words("  the U.S. army ") == [(2, 5), (6, 10), (11, 15)]
    assert split_words("") == [] and split_words("   ") == []


def test_split_words_chinese_is_one_word_per_character_with_original_offsets():
    text = "我在北京工作, 张三去了Shanghai。"
    spans = split_words(text)
    words = [text[a:b] for a, b in spans]
    assert words == ["我", "在", "北", "京", "工", "作", ",", "张", "三", "去", "了", "Shanghai", "。"]
    assert spans[7] == (8, 9)  # after the comma and the space


def test_text_records_give_character_offsets_into_the_original_line():
    lines = ["  Ana  Souza visited Porto Alegre.", "", "北京欢迎你"]
    spans = [split_words(line) for line in lines]
    tags = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"], [], ["B-LOC", "I-LOC", "O", "O", "O"]]
    records = text_records(lines, spans, tags)
    assert records[0]["entities"] == [
        {"text": "Ana  Souza", "type": "PER", "start": 2, "end": 12},
        {"text": "Porto Alegre", "type": "LOC", "start": 21, "end": 33},
    ]
    assert records[1] == {"text": "", "entities": []}
    assert records[2]["entities"] == [{"text": "北京", "type": "LOC", "start": 0, "end": 2}]
    for record in records:
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["text"]
    json.dumps(records, ensure_ascii=False)  # plain JSON


def test_conll_output_appends_the_prediction_in_conlleval_layout(tmp_path):
    path = tmp_path / "test.conll"
    path.write_text(
        "-DOCSTART- -X- O\n\nEU NNP I-ORG\nrejects VBZ O\n\t\nPeter NNP I-PER\n", encoding="utf-8"
    )
    conll = read_conll(path)
    lines = path.read_text().split("\n")[:-1]
    written = list(conll_lines_with_predictions(lines, conll, [["I-ORG", "O"], ["O"]]))
    assert written == [
        "-DOCSTART- -X- O O",
        "",
        "EU NNP I-ORG I-ORG",
        "rejects VBZ O O",
        "",
        "Peter NNP I-PER O",
    ]
    # a gold tag in another column moves to the second-to-last place
    path.write_text("EU\tI-ORG\tNNP\nrejects\tO\tVBZ\n", encoding="utf-8")
    conll = read_conll(path, tag_column=1)
    lines = path.read_text().split("\n")[:-1]
    written = list(conll_lines_with_predictions(lines, conll, [["B-ORG", "O"]]))
    assert written == ["EU\tNNP\tI-ORG\tB-ORG", "rejects\tVBZ\tO\tO"]


def test_checkpoint_keeps_its_scheme_and_refuses_another(tiny_bert_dir):
    module = TaggingModule(pretrained=str(tiny_bert_dir), label_names=["O", "B-X", "I-X"])
    module.tag_scheme = "IOB1"  # what the data module's evaluations say
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["tagging"] == {"tag_scheme": "IOB1"}
    restored = TaggingModule(pretrained=str(tiny_bert_dir), label_names=["O", "B-X", "I-X"])
    restored.tag_scheme = "BIO"
    with pytest.raises(UserError, match="trained with --data.tag_scheme IOB1, not BIO"):
        restored.on_load_checkpoint(checkpoint)


def test_untagged_conll_gets_the_prediction_as_second_column(tmp_path):
    path = tmp_path / "zh.conll"
    path.write_text("北\n京\n\n好\n", encoding="utf-8")
    conll = read_conll(path)
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    written = list(conll_lines_with_predictions(lines, conll, [["B-LOC", "I-LOC"], ["O"]]))
    assert written == ["北 B-LOC", "京 I-LOC", "", "好 O"]
