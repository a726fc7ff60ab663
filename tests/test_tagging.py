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


def test_the_feature_cache_key_covers_the_featurisation_code(tmp_path, tiny_bert_dir):
    """Editing any helper of the features module (not only the function called) is a cache miss."""
    import importlib.util
    import sys

    from tasks.features import tagging as features

    source = Path(features.__file__).read_text(encoding="utf-8")
    copy = tmp_path / "edited_features.py"

    def load(text: str):
        copy.write_text(text.replace("from ..", "from tasks."), encoding="utf-8")
        spec = importlib.util.spec_from_file_location("edited_features", copy)
        module = importlib.util.module_from_spec(spec)
        sys.modules["edited_features"] = module
        spec.loader.exec_module(module)
        return module

    cache = tmp_path / "cache"

    def featurise(module) -> set[str]:
        data = datamodule(tmp_path, IOB1_TRAIN, tokenizer=str(tiny_bert_dir), cache_dir=str(cache))
        data.feature_functions = (module.document_features,)
        data.build("train")
        return {p.name for p in cache.glob("*.arrow")}

    first = featurise(load(source))
    assert featurise(load(source)) == first  # same code: a cache hit
    edited = source.replace("    used = 0\n", "    used = 0  # an edit\n", 1)  # inside the helper _take
    assert edited != source
    assert len(featurise(load(edited)) - first) == 1  # a new cache file: a miss
    sys.modules.pop("edited_features", None)


def _predict_config(run_dir):
    """The resolved config a predict saved in its run's predict/<input>/ folder."""
    (found,) = run_dir.glob("predict/*/config.predict.yaml")
    return found.read_text()


def test_the_checkpoint_alone_brings_back_the_runs_featurisation(tmp_path, tiny_bert_dir, capfd):
    """An IOB1-trained model with short windows predicts without repeating those flags; an explicit
    option still wins, with a note."""
    import yaml

    from .conftest import FAST_TRAINER_ARGS as FAST
    from .conftest import ROOT, run_cli

    config = str(ROOT / "configs" / "ner.yaml")
    fit = ["fit", "--config", config, "--model.pretrained", tiny_bert_dir, "--trainer.max_steps", "1"]
    fit += ["--data.tag_scheme", "IOB1", "--data.max_seq_length", "16", "--data.document_context", "true"]
    assert run_cli(*fit, "--trainer.default_root_dir", tmp_path / "fit", *FAST) == 0
    checkpoint = tmp_path / "fit" / "checkpoints" / "best.ckpt"
    predict = ["predict", "--config", config, "--ckpt_path", checkpoint, *FAST]
    assert run_cli(*predict, "--trainer.default_root_dir", tmp_path / "a") == 0
    used = yaml.safe_load(_predict_config(tmp_path / "a"))["data"]["init_args"]
    assert (used["tag_scheme"], used["max_seq_length"], used["document_context"]) == ("IOB1", 16, True)
    capfd.readouterr()
    assert run_cli(*predict, "--data.max_seq_length", "32", "--trainer.default_root_dir", tmp_path / "b") == 0
    assert "note: --data.max_seq_length 32 overrides the checkpoint's 16" in capfd.readouterr().err
    used = yaml.safe_load(_predict_config(tmp_path / "b"))["data"]["init_args"]
    assert used["max_seq_length"] == 32


def test_decoding_is_checked_and_stored_in_the_hyper_parameters(tiny_bert_dir):
    labels = ["O", "B-X", "I-X"]
    assert TaggingModule(pretrained=str(tiny_bert_dir), label_names=labels).hparams["decoding"] == "viterbi"
    module = TaggingModule(pretrained=str(tiny_bert_dir), label_names=labels, decoding="argmax")
    assert module.decoding == module.hparams["decoding"] == "argmax"
    with pytest.raises(UserError, match="--model.decoding must be one of viterbi, argmax, not 'greedy'"):
        TaggingModule(pretrained=str(tiny_bert_dir), label_names=labels, decoding="greedy")
