"""SQuAD EM/F1: hand-computed values, and equality with the official v1.1/v2.0 algorithms."""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter

import pytest

from tasks.data.squad import read_squad
from tasks.metrics.squad import (
    evaluate_v1,
    evaluate_v2,
    exact_match_score,
    f1_score_v1,
    f1_score_v2,
    find_best_threshold,
    main,
    normalize_answer,
)

from .conftest import shared_path

# ----------------------------------------------------------------------------------------------
# Hand-made cases


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The  Quick, brown fox!", "quick brown fox"),
        ("an apple a day", "apple day"),
        ("Theatre", "theatre"),  # "the" only as a whole word
        ("A-B test", "ab test"),  # punctuation is dropped, not replaced by a space
        ("«Zoë»  déjà\tvu", "«zoë» déjà vu"),  # only ASCII punctuation goes; accents stay
        ("the", ""),
    ],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_f1_and_exact_match_by_hand():
    # prediction tokens [cat, sat], gold [cat, sat, on, mat]: P = 1, R = 1/2, F1 = 2/3
    assert f1_score_v1("the cat sat", "cat sat on the mat") == pytest.approx(2 / 3)
    # repeated tokens count as often as both sides hold them: common = {a1: 1}, P = 1/3, R = 1
    assert f1_score_v1("a1 a1 a1", "a1") == pytest.approx(0.5)
    assert exact_match_score("The Eiffel Tower.", "eiffel tower") == 1
    assert exact_match_score("Eiffel", "eiffel tower") == 0


def test_v1_and_v2_differ_on_empty_answers():
    # Gold "the" normalises to "": v1.1 keeps it (EM 1, F1 0), v2.0 turns it into the "" gold (EM 1, F1 1).
    assert f1_score_v1("a", "the") == 0
    assert f1_score_v2("a", "the") == 1
    assert evaluate_v1({"q": ["the"]}, {"q": "a"}) == {"exact_match": 100.0, "f1": 0.0}
    assert evaluate_v2({"q": ["the"]}, {"q": "a"})["f1"] == 100.0


def test_evaluate_v1_max_over_golds_and_missing_predictions():
    gold = {"q1": ["Denver Broncos", "the Broncos"], "q2": ["1850s"], "q3": ["Paris"]}
    predictions = {"q1": "Broncos", "q2": "in the 1850s"}  # q3 missing: scores 0, still counted
    # q1: EM max(0 vs "denver broncos", 1 vs "the Broncos" -> "broncos") = 1; F1 max(2/3, 1) = 1
    # q2: EM 0; pred [in, 1850s], gold [1850s]: P = 1/2, R = 1, F1 = 2/3
    metrics = evaluate_v1(gold, predictions)
    assert metrics["exact_match"] == pytest.approx(100 / 3)
    assert metrics["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)


def test_evaluate_v2_by_hand():
    gold = {"a": ["blue"], "b": ["red car"], "n1": [], "n2": []}
    predictions = {"a": "blue", "b": "car", "n1": "", "n2": "green"}
    metrics = evaluate_v2(gold, predictions)
    # raw EM: a 1, b 0, n1 1 ("" == ""), n2 0; F1: a 1, b 2*1*.5/1.5 = 2/3, n1 1, n2 0
    assert metrics["exact"] == pytest.approx(50.0)
    assert metrics["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
    assert metrics["total"] == 4
    assert metrics["HasAns_exact"] == pytest.approx(50.0)
    assert metrics["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert metrics["NoAns_exact"] == metrics["NoAns_f1"] == pytest.approx(50.0)
    assert "best_f1" not in metrics  # no odds, no threshold search


def test_best_threshold_by_hand():
    gold = {"a": ["blue"], "b": ["red car"], "n1": [], "n2": []}
    predictions = {"a": "blue", "b": "car", "n1": "", "n2": "green"}
    odds = {"a": -3.0, "n2": 1.0, "b": 2.0, "n1": 5.0}
    has_answer = {qid: bool(golds) for qid, golds in gold.items()}
    raw_f1 = {"a": 1.0, "b": 2 / 3, "n1": 1.0, "n2": 0.0}
    # Start: everything null -> 2 (n1, n2 right). Walk by odds: a (+1 -> 3, best at -3),
    # n2 answered "green" (-1 -> 2), b (+2/3 -> 2.67), n1 answered "" (+0). Best 3 at -3.
    best, threshold = find_best_threshold(predictions, raw_f1, odds, has_answer)
    assert best == pytest.approx(75.0) and threshold == -3.0
    metrics = evaluate_v2(gold, predictions, odds, na_prob_thresh=1.5)
    # odds > 1.5 score as null: b -> 0 (it has an answer), n1 -> 1; n2 (1.0) keeps its wrong answer.
    assert metrics["exact"] == pytest.approx(50.0)
    assert metrics["best_f1"] == pytest.approx(75.0) and metrics["best_f1_thresh"] == -3.0
    assert metrics["best_exact"] == pytest.approx(75.0)


def test_missing_odds_is_an_error():
    with pytest.raises(ValueError, match="lack 1 predicted question"):
        evaluate_v2({"a": ["x"], "b": []}, {"a": "x", "b": ""}, {"a": 0.5})


# ----------------------------------------------------------------------------------------------
# The official algorithms, written out literally as the oracle (SQuAD v1.1 and v2.0 evaluate scripts)


def _official_normalize(s):
    def remove_articles(text):
        return re.sub(re.compile(r"\b(a|an|the)\b", re.UNICODE), " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _official_v1(dataset, predictions):
    def f1_score(prediction, ground_truth):
        prediction_tokens = _official_normalize(prediction).split()
        ground_truth_tokens = _official_normalize(ground_truth).split()
        common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
        num_same = sum(common.values())
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(prediction_tokens)
        recall = 1.0 * num_same / len(ground_truth_tokens)
        return (2 * precision * recall) / (precision + recall)

    def exact(prediction, ground_truth):
        return _official_normalize(prediction) == _official_normalize(ground_truth)

    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                truths = [x["text"] for x in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_match += max(exact(prediction, t) for t in truths)
                f1 += max(f1_score(prediction, t) for t in truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def _official_v2(dataset, preds, na_probs=None, na_prob_thresh=1.0):
    qid_to_has_ans = {
        qa["id"]: bool(qa["answers"]) for a in dataset for p in a["paragraphs"] for qa in p["qas"]
    }

    def get_tokens(s):
        return _official_normalize(s).split() if s else []

    def compute_f1(a_gold, a_pred):
        gold_toks, pred_toks = get_tokens(a_gold), get_tokens(a_pred)
        common = Counter(gold_toks) & Counter(pred_toks)
        num_same = sum(common.values())
        if len(gold_toks) == 0 or len(pred_toks) == 0:
            return int(gold_toks == pred_toks)
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(pred_toks)
        recall = 1.0 * num_same / len(gold_toks)
        return (2 * precision * recall) / (precision + recall)

    exact_raw, f1_raw = {}, {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                golds = [a["text"] for a in qa["answers"] if _official_normalize(a["text"])] or [""]
                pred = preds[qa["id"]]
                exact_raw[qa["id"]] = max(
                    int(_official_normalize(a) == _official_normalize(pred)) for a in golds
                )
                f1_raw[qa["id"]] = max(compute_f1(a, pred) for a in golds)
    probs = na_probs if na_probs is not None else {k: 0.0 for k in preds}

    def threshold(scores):
        return {
            q: float(not qid_to_has_ans[q]) if probs[q] > na_prob_thresh else s for q, s in scores.items()
        }

    def make_eval(exact_scores, f1_scores, qid_list=None):
        qids = qid_list or list(exact_scores)
        return {
            "exact": 100.0 * sum(exact_scores[k] for k in qids) / len(qids),
            "f1": 100.0 * sum(f1_scores[k] for k in qids) / len(qids),
            "total": len(qids),
        }

    exact_t, f1_t = threshold(exact_raw), threshold(f1_raw)
    out = make_eval(exact_t, f1_t)
    for prefix, want in (("HasAns", True), ("NoAns", False)):
        qids = [k for k, v in qid_to_has_ans.items() if v == want]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in make_eval(exact_t, f1_t, qids).items()})
    if na_probs is not None:
        for name, scores in (("exact", exact_raw), ("f1", f1_raw)):
            cur = best = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
            best_thresh = 0.0
            for qid in sorted(na_probs, key=lambda k: na_probs[k]):
                if qid not in scores:
                    continue
                diff = scores[qid] if qid_to_has_ans[qid] else (-1 if preds[qid] else 0)
                cur += diff
                if cur > best:
                    best, best_thresh = cur, na_probs[qid]
            out[f"best_{name}"], out[f"best_{name}_thresh"] = 100.0 * best / len(scores), best_thresh
    return out


def _synthetic_predictions(dataset, seed):
    """Gold texts, supersets, halves, random spans, empty answers and odds with ties."""
    rng = random.Random(seed)
    predictions, odds = {}, {}
    for article in dataset:
        for paragraph in article["paragraphs"]:
            words = paragraph["context"].split()
            for qa in paragraph["qas"]:
                golds = [a["text"] for a in qa["answers"]] or [""]
                gold = rng.choice(golds)
                choice = rng.randrange(6)
                if choice == 0:
                    prediction = gold
                elif choice == 1:
                    prediction = f"the {gold}, {rng.choice(words)}"
                elif choice == 2:
                    prediction = " ".join(gold.split()[: max(1, len(gold.split()) // 2)])
                elif choice == 3:
                    start = rng.randrange(len(words))
                    prediction = " ".join(words[start : start + rng.randint(1, 6)])
                elif choice == 4:
                    prediction = ""
                else:
                    prediction = gold.upper() + "."
                predictions[qa["id"]] = prediction
                odds[qa["id"]] = round(rng.uniform(-5, 5), 1)  # one decimal: many ties
    return predictions, odds


@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_official_v1_on_xquad(seed):
    path = shared_path("data", "qa", "xquad.en.json")
    dataset = json.loads(path.read_text(encoding="utf-8"))["data"]
    predictions, _ = _synthetic_predictions(dataset, seed)
    del predictions[next(iter(predictions))]  # one question without a prediction
    gold = read_squad(path, check_answer_starts=False).gold_answers()
    assert evaluate_v1(gold, predictions) == _official_v1(dataset, predictions)  # bit for bit


@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_official_v2_on_squad_v2_sample(seed):
    path = shared_path("data", "qa", "squad-v2.0-dev-sample.json")
    dataset = json.loads(path.read_text(encoding="utf-8"))["data"]
    predictions, odds = _synthetic_predictions(dataset, seed)
    gold = read_squad(path).gold_answers()
    assert evaluate_v2(gold, predictions) == _official_v2(dataset, predictions)
    for threshold in (1.0, 0.0, -2.5):
        ours = evaluate_v2(gold, predictions, odds, threshold)
        assert ours == _official_v2(dataset, predictions, odds, threshold)
    assert set(ours) >= {"HasAns_exact", "NoAns_f1", "best_f1", "best_f1_thresh", "best_exact_thresh"}


def test_v1_agrees_with_torchmetrics_on_xquad():
    torchmetrics_squad = pytest.importorskip("torchmetrics.functional.text.squad").squad
    path = shared_path("data", "qa", "xquad.en.json")
    data = read_squad(path)
    predictions, _ = _synthetic_predictions(json.loads(path.read_text(encoding="utf-8"))["data"], 3)
    # torchmetrics follows v2.0 on empty strings; compare where the two versions agree
    predictions = {qid: text or "x" for qid, text in predictions.items()}
    theirs = torchmetrics_squad(
        [{"prediction_text": predictions[e.id], "id": e.id} for e in data.examples],
        [
            {
                "answers": {
                    "text": [a.text for a in e.answers],
                    "answer_start": [a.start for a in e.answers],
                },
                "id": e.id,
            }
            for e in data.examples
        ],
    )
    ours = evaluate_v1(data.gold_answers(), predictions)
    assert ours["exact_match"] == pytest.approx(float(theirs["exact_match"]), abs=1e-3)
    assert ours["f1"] == pytest.approx(float(theirs["f1"]), abs=1e-3)


# ----------------------------------------------------------------------------------------------
# score-squad


def test_score_squad_command(tmp_path, capsys):
    path = shared_path("data", "qa", "squad-v2.0-dev-sample.json")
    dataset = json.loads(path.read_text(encoding="utf-8"))["data"]
    predictions, odds = _synthetic_predictions(dataset, 5)
    (tmp_path / "predictions.json").write_text(json.dumps(predictions))
    (tmp_path / "null_odds.json").write_text(json.dumps(odds))
    args = [str(path), str(tmp_path / "predictions.json"), "--na-prob-file", str(tmp_path / "null_odds.json")]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == _official_v2(dataset, predictions, odds)

    # Our predict JSONL is accepted as well, with the same result.
    lines = [
        json.dumps({"id": qid, "answer": text, "start": None, "end": None, "score": 0})
        for qid, text in predictions.items()
    ]
    (tmp_path / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    assert main([str(path), str(tmp_path / "predictions.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out) == _official_v2(dataset, predictions)


def test_score_squad_v1_and_errors(tmp_path, capsys):
    data = tmp_path / "data.json"
    context = "Ada wrote the first program in 1843."
    data.write_text(
        json.dumps(
            {
                "version": "1.1",
                "data": [
                    {
                        "title": "t",
                        "paragraphs": [
                            {
                                "context": context,
                                "qas": [
                                    {
                                        "id": "q1",
                                        "question": "Who wrote it?",
                                        "answers": [{"text": "Ada", "answer_start": 0}],
                                    },
                                    {
                                        "id": "q2",
                                        "question": "When?",
                                        "answers": [{"text": "1843", "answer_start": 31}],
                                    },
                                ],
                            }
                        ],
                    }
                ],
            }
        )
    )
    (tmp_path / "p.json").write_text(json.dumps({"q1": "Ada", "q2": "in 1843"}))
    assert main([str(data), str(tmp_path / "p.json")]) == 0
    # q2: pred [in, 1843] vs [1843]: F1 2/3
    assert json.loads(capsys.readouterr().out) == pytest.approx(
        {"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2}
    )

    (tmp_path / "bad.json").write_text(json.dumps({"q1": 3}))
    assert main([str(data), str(tmp_path / "bad.json")]) == 2
    assert "bad.json (example q1): the answer of q1 is not a string" in capsys.readouterr().err
    assert main([str(data), str(tmp_path / "absent.json")]) == 2
    assert "absent.json: file not found" in capsys.readouterr().err
