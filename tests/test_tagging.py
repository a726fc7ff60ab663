"""The tagging data module and module: label sets, scheme conversion, unseen tags, the stored scheme."""

from pathlib import Path

import pytest

from tasks.io import DataError, UserError
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
