"""Raw text to words with character offsets, and entity records back into the text."""

import json

from tasks.data.words import split_words, text_records


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
    # CoNLL-2003's own tokens stay whole: a clitic alone, an initial, a list's ordinal
    text = "England 's captain J. Smith : 1. Kenya , don't"
    assert [text[a:b] for a, b in split_words(text)] == text.replace("don't", "do n't").split()
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


def test_whole_word_span_hand_computed():
    from tasks.data.words import whole_word_span

    text = "Zoë's café, 北京 now"
    assert whole_word_span(text, 1, 2) == (0, 3)  # inside "Zoë"
    assert whole_word_span(text, 0, 3) == (0, 3)  # already whole; the clitic stays out
    assert whole_word_span(text, 7, 9) == (6, 10)  # "café", the comma left alone
    assert whole_word_span(text, 12, 13) == (12, 13)  # CJK characters are words of their own
    assert whole_word_span(text, 16, 17) == (15, 18)
