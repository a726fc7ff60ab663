"""BERT's WordPiece tokenizer straight from ``tokenizers``, for the plain predictor's start-up
(beside ``tokenizer.py``: every tokenizer is built in ``bert_core``).

``bert_core.tokenizer.build_tokenizer`` gives transformers' ``BertTokenizerFast``, whose import
takes seconds (most of a two-line predict). This builds the same Rust tokenizer (the same
normalizer, pre-tokenizer, WordPiece model, special tokens and [CLS]/[SEP] template; a test compares
the two tokenizers' JSON) and answers the calls sentence classification's featurizer makes:
``tokenizer(texts, pairs, truncation=..., max_length=...)`` for ids, type ids and masks, and
``num_special_tokens_to_add``, and tagging's words (``is_split_into_words``, ``word_ids``). Any
other option is refused (TypeError), never ignored.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_ACCEPTED = {"truncation", "max_length", "add_special_tokens", "verbose", "is_split_into_words"}
_RETURNS = ("return_attention_mask", "return_token_type_ids")


class PlainTokenizer:
    def __init__(self, vocab: Mapping[str, int], do_lower_case: bool, model_max_length: int):
        from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
        from tokenizers.models import WordPiece

        backend = Tokenizer(WordPiece(dict(vocab), unk_token="[UNK]", max_input_chars_per_word=100))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=do_lower_case
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0",
            pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        backend.decoder = decoders.WordPiece(prefix="##")
        backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
        self.backend_tokenizer = backend
        self.pad_token_id = vocab["[PAD]"]
        self.cls_token_id, self.sep_token_id = vocab["[CLS]"], vocab["[SEP]"]
        self.model_max_length = model_max_length
        self._lock = threading.Lock()  # a call sets the backend's truncation, then encodes

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 3 if pair else 2

    def __call__(self, texts: Sequence[str], pairs: Sequence[str] | None = None, **options: Any) -> Encoded:
        """transformers' batch call for the options above: lists of ids per input, no padding."""
        unknown = set(options) - _ACCEPTED - set(_RETURNS)
        if unknown:
            raise TypeError(f"PlainTokenizer does not take {', '.join(sorted(unknown))}")
        with self._lock:
            return self._call(texts, pairs, options)

    def _call(self, texts: Sequence[str], pairs: Sequence[str] | None, options: dict[str, Any]) -> Encoded:
        backend = self.backend_tokenizer
        truncation = options.get("truncation")
        if truncation in (None, False):
            backend.no_truncation()
        else:
            strategy = "longest_first" if truncation is True else truncation
            backend.enable_truncation(options["max_length"], strategy=strategy)
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        encodings = backend.encode_batch(
            inputs,
            add_special_tokens=options.get("add_special_tokens", True),
            is_pretokenized=bool(options.get("is_split_into_words")),
        )
        out = Encoded(encodings)
        if options.get("return_token_type_ids") is not False:
            out["token_type_ids"] = [e.type_ids for e in encodings]
        if options.get("return_attention_mask") is not False:
            out["attention_mask"] = [e.attention_mask for e in encodings]
        return out


class Encoded(dict):
    """The columns of a batch call, and each input's word of each token (``word_ids``)."""

    def __init__(self, encodings: list) -> None:
        super().__init__(input_ids=[e.ids for e in encodings])
        self.encodings = encodings

    def word_ids(self, index: int) -> list[int | None]:
        return self.encodings[index].word_ids
