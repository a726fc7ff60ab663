"""The CoNLL reader: every quirk of real files, and bad input reported as file:line."""

from pathlib import Path

import pytest

from tasks.data.conll import conll_lines_with_predictions, documents, read_conll
from tasks.io import DataError

SHARED_WNUT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ner" / "wnut17"


def write(tmp_path: Path, text: str, name: str = "sample.conll") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_space_separated_four_columns_tag_is_last_by_default(tmp_path):
    path = write(
        tmp_path,
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP I-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP I-MISC\n\nPeter NNP B-NP I-PER\n",
    )
    conll = read_conll(path)
    assert [s.words for s in conll.sentences] == [["EU", "rejects", "German"], ["Peter"]]
    assert [s.tags for s in conll.sentences] == [["I-ORG", "O", "I-MISC"], ["I-PER"]]
    assert conll.num_columns == 4 and conll.tag_column == 3 and conll.separator == " "
    assert conll.sentences[0].lines == [3, 4, 5] and conll.sentences[1].line == 7


def test_configurable_tag_column(tmp_path):
    path = write(tmp_path, "EU NNP B-NP I-ORG\nrejects VBZ B-VP O\n")
    assert read_conll(path, tag_column=2).sentences[0].tags == ["B-NP", "B-VP"]
    assert read_conll(path, tag_column=-2).sentences[0].tags == ["B-NP", "B-VP"]
    with pytest.raises(DataError, match=r"sample.conll:1: tag column 4 does not exist"):
        read_conll(path, tag_column=4)


def test_tab_separated_token_with_a_space_stays_whole(tmp_path):
    conll = read_conll(write(tmp_path, "New York\tB-LOC\nis\tO \t\n"))  # trailing blanks are not a column
    assert conll.sentences[0].words == ["New York", "is"]
    assert conll.sentences[0].tags == ["B-LOC", "O"]
    assert conll.separator == "\t"


def test_whitespace_only_separators_like_wnut17_single_tab(tmp_path):
    conll = read_conll(write(tmp_path, "a\tO\nb\tB-person\n\t\nc\tO\n   \nd\tO\n \t \ne\tO\n"))
    assert [s.words for s in conll.sentences] == [["a", "b"], ["c"], ["d"], ["e"]]


def test_docstart_at_start_and_at_end_of_documents_cut_the_same_documents(tmp_path):
    at_start = "-DOCSTART- O\n\na O\n\nb O\n\n-DOCSTART- O\n\nc O\n"
    at_end = "a O\n\nb O\n-DOCSTART- O\nc O\n\n-DOCSTART- O\n"
    for name, text in (("start.conll", at_start), ("end.conll", at_end)):
        conll = read_conll(write(tmp_path, text, name))
        assert [s.document for s in conll.sentences] == [0, 0, 1], name
        assert documents(conll.sentences) == [[0, 1], [2]]
        assert conll.has_docstart


def test_docstart_without_blank_line_ends_the_sentence(tmp_path):
    conll = read_conll(write(tmp_path, "a O\nb O\n-DOCSTART- O\nc O\n"))
    assert [s.words for s in conll.sentences] == [["a", "b"], ["c"]]
    assert [s.document for s in conll.sentences] == [0, 1]


def test_no_docstart_means_one_document(tmp_path):
    conll = read_conll(write(tmp_path, "a O\n\nb O\n"))
    assert documents(conll.sentences) == [[0, 1]] and not conll.has_docstart


def test_single_column_file_is_untagged(tmp_path):
    conll = read_conll(write(tmp_path, "北\n京\n\n你\n"))
    assert [s.words for s in conll.sentences] == [["北", "京"], ["你"]]
    assert conll.sentences[0].tags is None and not conll.has_tags


def test_crlf_and_bom_are_harmless(tmp_path):
    path = tmp_path / "windows.conll"
    path.write_bytes("\ufeffa O\r\nb B-LOC\r\n\r\nc O\r\n".encode())
    conll = read_conll(path)
    assert [s.tags for s in conll.sentences] == [["O", "B-LOC"], ["O"]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a O\nb O extra\n", r"bad.conll:2: expected 2 columns like the first token line, found 3"),
        ("a O\n\nb\n", r"bad.conll:3: expected 2 columns"),
        ("a O\nb B_PER\n", r"bad.conll:2: invalid tag 'B_PER'"),
        ("a O\n\n\nb X-LOC\n", r"bad.conll:4: invalid tag 'X-LOC'"),
        ("a B-\n", r"bad.conll:1: invalid tag 'B-'"),
        ("", r"bad.conll:1: no sentences found"),
        ("-DOCSTART- O\n\n\t\n", r"bad.conll:3: no sentences found"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_conll(write(tmp_path, text, "bad.conll"))


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.conll"
    path.write_bytes(b"a O\nM\xfcller B-PER\n")
    with pytest.raises(DataError, match=r"latin1.conll:2: not valid UTF-8"):
        read_conll(path)


@pytest.mark.skipif(not SHARED_WNUT.is_dir(), reason="../shared/data/ner/wnut17 is absent")
def test_real_wnut17_files_read_with_their_sentence_counts():
    counts = {
        name: len(read_conll(SHARED_WNUT / f"{name}.conll").sentences) for name in ("train", "dev", "test")
    }
    assert counts == {"train": 3394, "dev": 1009, "test": 1287}


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


def test_untagged_conll_gets_the_prediction_as_second_column(tmp_path):
    path = tmp_path / "zh.conll"
    path.write_text("北\n京\n\n好\n", encoding="utf-8")
    conll = read_conll(path)
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    written = list(conll_lines_with_predictions(lines, conll, [["B-LOC", "I-LOC"], ["O"]]))
    assert written == ["北 B-LOC", "京 I-LOC", "", "好 O"]
