"""SQuAD exact match and F1, computed exactly as the official v1.1 and v2.0 evaluation scripts.

Both scripts normalise an answer the same way (lower case, drop ASCII punctuation, drop the
articles a/an/the, collapse whitespace), compare bags of tokens for F1 and take the maximum over
the gold answers. They differ in details that change the numbers, so both are kept:

- v1.1 (``evaluate_v1``): every gold answer counts as given, and F1 is 0 when either side has no
  tokens. Keys ``exact_match`` and ``f1``.
- v2.0 (``evaluate_v2``): gold answers that normalise to nothing are dropped, a question left with
  none has the single gold answer "" (unanswerable), and F1 is 1 when both sides are empty. The
  null-answer odds of each question (``na_probs``) allow the official ``na_prob_thresh`` and the
  search for the best threshold. Keys as the official script prints them: ``exact``, ``f1``,
  ``total``, ``HasAns_*``, ``NoAns_*``, ``best_exact``, ``best_exact_thresh``, ``best_f1``,
  ``best_f1_thresh``.

Questions without a prediction: the v1.1 script scores them 0 and keeps them in the total, and so
do we for both versions (the official v2.0 script stops with a KeyError there instead). When every
question has a prediction, the numbers equal the official scripts' to the last bit (same formulas,
same summation order).

``python -m tasks score-squad DATA.json PREDICTIONS.json [--na-prob-file null_odds.json]`` runs
``main`` on any system's predictions: a JSON ``{id: answer}`` file (official format) or our
``predict`` JSONL output.
"""

from __future__ import annotations

import json
import math
import re
import string
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..data.jsonl import iter_jsonl
from ..io import CommandParser, DataError, UserError, read_text_lines

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, then the articles a/an/the, and collapse whitespace."""
    text = text.lower()
    text = "".join(char for char in text if char not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def _overlap_f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def f1_score_v1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the v1.1 script: 0 when either side normalises to nothing."""
    return _overlap_f1(normalize_answer(prediction).split(), normalize_answer(gold).split())


def f1_score_v2(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the v2.0 script: an empty side scores 1 if both are empty, else 0."""
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not prediction_tokens or not gold_tokens:
        return int(prediction_tokens == gold_tokens)
    return _overlap_f1(prediction_tokens, gold_tokens)


def _max_over_golds(score: Callable[[str, str], float], prediction: str, golds: Sequence[str]) -> float:
    return max(score(prediction, gold) for gold in golds)


def evaluate_v1(
    gold_answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> dict[str, float]:
    """The official SQuAD v1.1 metrics: ``{"exact_match": %, "f1": %}``.

    ``gold_answers`` maps each question id to its gold texts, in file order; every question
    needs at least one (unanswerable questions are v2.0: use ``evaluate_v2``).
    """
    if not gold_answers:
        raise ValueError("no questions to score")
    exact_match = f1 = 0.0
    for qid, golds in gold_answers.items():
        if not golds:
            raise ValueError(
                f"question {qid} has no gold answer: score unanswerable questions with evaluate_v2"
            )
        if qid not in predictions:
            continue  # scores 0, still counted in the total
        prediction = predictions[qid]
        exact_match += _max_over_golds(exact_match_score, prediction, golds)
        f1 += _max_over_golds(f1_score_v1, prediction, golds)
    total = len(gold_answers)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def evaluate_v2(
    gold_answers: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """The official SQuAD v2.0 metrics (see the module docstring for the keys).

    ``na_probs`` maps question ids to null-answer odds (our ``null_odds.json``: null score minus
    best span score); a question whose odds exceed ``na_prob_thresh`` is scored as answered
    null. With ``na_probs``, the best threshold for EM and for F1 is searched as well.
    """
    if not gold_answers:
        raise ValueError("no questions to score")
    has_answer = {qid: bool(golds) for qid, golds in gold_answers.items()}
    answered = [qid for qid in gold_answers if qid in predictions]
    if na_probs is not None:
        lacking = [qid for qid in answered if qid not in na_probs]
        if lacking:
            raise ValueError(
                f"the null-answer odds lack {len(lacking)} predicted question(s), e.g. {lacking[0]}"
            )
    raw_exact: dict[str, float] = {}
    raw_f1: dict[str, float] = {}
    for qid, golds in gold_answers.items():
        if qid not in predictions:
            raw_exact[qid] = raw_f1[qid] = 0  # no prediction: wrong, whatever the threshold
            continue
        kept = [gold for gold in golds if normalize_answer(gold)] or [""]
        raw_exact[qid] = _max_over_golds(exact_match_score, predictions[qid], kept)
        raw_f1[qid] = _max_over_golds(f1_score_v2, predictions[qid], kept)

    odds = na_probs if na_probs is not None else {qid: 0.0 for qid in predictions}
    exact = _apply_null_threshold(raw_exact, odds, has_answer, answered, na_prob_thresh)
    f1 = _apply_null_threshold(raw_f1, odds, has_answer, answered, na_prob_thresh)
    result = _summary(exact, f1, list(gold_answers))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid, has in has_answer.items() if has == wanted]
        if qids:
            result.update({f"{prefix}_{key}": value for key, value in _summary(exact, f1, qids).items()})
    if na_probs is not None:
        result["best_exact"], result["best_exact_thresh"] = find_best_threshold(
            predictions, raw_exact, na_probs, has_answer
        )
        result["best_f1"], result["best_f1_thresh"] = find_best_threshold(
            predictions, raw_f1, na_probs, has_answer
        )
    return result


def _apply_null_threshold(
    scores: dict[str, float],
    odds: Mapping[str, float],
    has_answer: Mapping[str, bool],
    answered: list[str],
    threshold: float,
) -> dict[str, float]:
    """Questions whose null odds exceed the threshold are scored as if answered null."""
    thresholded = dict(scores)
    for qid in answered:
        if odds[qid] > threshold:
            thresholded[qid] = float(not has_answer[qid])
    return thresholded


def _summary(exact: Mapping[str, float], f1: Mapping[str, float], qids: list[str]) -> dict[str, float]:
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact[qid] for qid in qids) / total,
        "f1": 100.0 * sum(f1[qid] for qid in qids) / total,
        "total": total,
    }


def find_best_threshold(
    predictions: Mapping[str, str],
    raw_scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_answer: Mapping[str, bool],
) -> tuple[float, float]:
    """(best score in %, its threshold): the official v2.0 ``find_best_thresh``.

    Start from "every question answered null" (all unanswerable ones right), then walk the
    questions by increasing null odds, switching each to its predicted answer, and keep the
    odds where the running score peaked. Null is then predicted where odds > threshold.
    """
    predicted_no_answer = [qid for qid, has in has_answer.items() if not has and qid in predictions]
    current = best = len(predicted_no_answer)
    best_threshold = 0.0
    # sorted() is stable: ties keep the order of na_probs, as in the official script.
    for qid in sorted(na_probs, key=lambda key: na_probs[key]):
        if qid not in raw_scores or qid not in predictions:
            continue
        if has_answer[qid]:
            current += raw_scores[qid]
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, best_threshold = current, na_probs[qid]
    return 100.0 * best / len(raw_scores), best_threshold


def evaluate(
    gold_answers: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    version_2_with_negative: bool,
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """``evaluate_v2`` for SQuAD v2.0 data, else ``evaluate_v1``."""
    if version_2_with_negative:
        return evaluate_v2(gold_answers, predictions, na_probs, na_prob_thresh)
    return evaluate_v1(gold_answers, predictions)


# ----------------------------------------------------------------------------------------------
# score-squad: the scorer as a command


def read_predictions(path: str | Path) -> dict[str, str]:
    """{id: answer text} from an official predictions.json or from our predict JSONL output."""
    path = Path(path)
    lines = read_text_lines(path)
    text = "\n".join(lines)
    if not text.strip():
        raise DataError(path, "empty file: no predictions")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if isinstance(document, dict) and not {"id", "answer"} <= document.keys():
        predictions = document
    else:  # JSONL {id, answer, ...}, one prediction a line
        predictions = {}
        for number, record in iter_jsonl(path, lines):
            if not isinstance(record, dict) or "id" not in record or "answer" not in record:
                raise DataError(path, "a JSONL prediction needs 'id' and 'answer'", line=number)
            predictions[str(record["id"])] = record["answer"]
    bad = next((qid for qid, answer in predictions.items() if not isinstance(answer, str)), None)
    if bad is not None:
        raise DataError(path, f"the answer of {bad} is not a string", example=bad)
    return predictions


def read_na_probs(path: str | Path) -> dict[str, float]:
    path = Path(path)
    try:
        document = json.loads("\n".join(read_text_lines(path)))
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON: {err.msg}", line=err.lineno) from None
    if not isinstance(document, dict):
        raise DataError(path, "expected a JSON object {id: null-answer odds}")
    for qid, value in document.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise DataError(path, f"odds {value!r} is not a number", example=qid)
    return {qid: float(value) for qid, value in document.items()}


def score_files(
    data_file: str | Path,
    predictions_file: str | Path,
    na_prob_file: str | Path | None = None,
    na_prob_thresh: float = 1.0,
    version: str = "auto",
) -> dict[str, float]:
    """The metrics of a predictions file against a SQuAD data file (JSON or JSONL with answers)."""
    from ..data.squad import read_squad  # the scorer needs no answer_start checks

    data = read_squad(data_file, check_answer_starts=False)
    if not data.has_answers:
        raise DataError(data_file, "some questions carry no 'answers': nothing to score against")
    predictions = read_predictions(predictions_file)
    na_probs = read_na_probs(na_prob_file) if na_prob_file else None
    gold = data.gold_answers()
    missing = sum(qid not in predictions for qid in gold)
    if missing:
        print(
            f"warning: {missing} of {len(gold)} questions have no prediction; they score 0", file=sys.stderr
        )
    version_2 = {"auto": data.version_2_with_negative or na_probs is not None, "1.1": False, "2.0": True}[
        version
    ]
    try:
        return evaluate(gold, predictions, version_2, na_probs, na_prob_thresh)
    except ValueError as err:
        raise UserError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """``score-squad DATA PREDICTIONS [--na-prob-file F] [--na-prob-thresh T] [--version V]``."""
    parser = CommandParser(
        prog="python -m tasks score-squad",
        description="Score SQuAD predictions with the official v1.1/v2.0 EM and F1; prints the metrics as JSON.",
    )
    parser.add_argument("data_file", help="SQuAD JSON (v1.1 or v2.0), or JSONL with answers")
    parser.add_argument("predictions_file", help="{id: answer} JSON (official format) or our predict JSONL")
    parser.add_argument("--na-prob-file", help="{id: null-answer odds} JSON, e.g. null_odds.json (v2.0)")
    parser.add_argument(
        "--na-prob-thresh",
        type=float,
        default=1.0,
        help="score as null where the odds exceed this (official default 1.0)",
    )
    parser.add_argument(
        "--version",
        choices=("auto", "1.1", "2.0"),
        default="auto",
        help="scoring rules; auto: v2.0 when the data has unanswerable questions or --na-prob-file is given",
    )
    args = parser.parse_args(argv)
    try:
        metrics = score_files(
            args.data_file, args.predictions_file, args.na_prob_file, args.na_prob_thresh, args.version
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
