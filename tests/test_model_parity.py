"""Our BERT against transformers' on random tiny configs: outputs, gradients, save/load round trips.

Both models hold the same random weights (our parameter names are transformers' names but for the
fused ``qkv``, which ``split_qkv`` names as its three parts) and run in fp32 with dropout off. Every comparison is max-abs within 1e-5.

Padded positions: our BertModel does not compute them (their rows are zeros) unless the caller
asks for ``hidden_states``, in which case every position is computed and matches transformers too;
BertForPreTraining always computes every position. So outputs are compared on real positions
always, and on every position where they are defined.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import transformers

import bert_core.kernels as kernels
import bert_core.model as model_lib
from bert_core import BertConfig, BertForPreTraining, BertModel
from bert_core.checkpoint import split_qkv

TOL = 1e-5

# Shapes that exercise different head sizes (1 head, odd heads, 8 heads), depths, activations and
# segment vocabularies; half of them run transformers' eager attention, half its SDPA attention.
# name: (layers, hidden, heads, intermediate, hidden_act, type_vocab_size, layer_norm_eps, attention)
CONFIGS = {
    "L2-H32-A4-gelu": (2, 32, 4, 37, "gelu", 2, 1e-12, "eager"),
    "L3-H48-A3-gelu_new": (3, 48, 3, 64, "gelu_new", 3, 1e-12, "sdpa"),
    "L1-H64-A8-relu": (1, 64, 8, 96, "relu", 1, 1e-12, "eager"),
    "L2-H24-A1-eps1e-5": (2, 24, 1, 16, "gelu", 4, 1e-5, "sdpa"),
}
VOCAB, MAX_POSITIONS = 97, 40
MODEL_CLASSES = {"BertModel": BertModel, "BertForPreTraining": BertForPreTraining}


def make_config(name: str) -> tuple[BertConfig, str]:
    layers, hidden, heads, intermediate, hidden_act, type_vocab_size, eps, attn = CONFIGS[name]
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        hidden_act=hidden_act,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=type_vocab_size,
        layer_norm_eps=eps,
    )
    return config, attn


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Weights far from BERT's init (non-zero biases, LayerNorm scales away from 1) so nothing hides."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + 0.2 * noise if "LayerNorm.weight" in name else 0.2 * noise)


def build_pair(cls_name: str, config_name: str, seed: int = 0):
    """Ours and transformers', same weights, eval mode."""
    config, attn = make_config(config_name)
    ours = MODEL_CLASSES[cls_name](config)
    randomize_(ours, seed)
    hf_config = transformers.BertConfig(**config.to_hf_dict())
    ref = getattr(transformers, cls_name)._from_config(hf_config, attn_implementation=attn)
    result = ref.load_state_dict(split_qkv(ours.state_dict()), strict=False)
    assert not result.unexpected_keys
    # The MLM decoder is tied to the word embeddings and to cls.predictions.bias in both models.
    assert set(result.missing_keys) <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    return ours.eval(), ref.eval()


# Rows out of order, one of a single token, lengths that make several attention groups, some of
# them padded, some full.
LENGTHS = (9, 13, 1, 5, 12, 7, 4, 10, 2, 13)


def named_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our gradients under transformers' names (the fused qkv's as query, key and value); zeros where none."""
    return split_qkv(
        {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}
    )


def make_batch(config: BertConfig, seed: int, lengths=LENGTHS):
    """A right-padded batch: rows of different lengths, random tokens and segments."""
    generator = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    real = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # [B, T]
    input_ids = torch.randint(1, config.vocab_size, (B, T), generator=generator) * real
    token_type_ids = torch.randint(0, config.type_vocab_size, (B, T), generator=generator) * real
    return input_ids, real.long(), token_type_ids


def run_reference(ref, input_ids, attention_mask, token_type_ids):
    """transformers' outputs under our field names (its BertForPreTraining has no pooler field)."""
    bert = ref.bert if hasattr(ref, "bert") else ref
    out = ref(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        output_hidden_states=True,
    )
    result = {"last_hidden_state": out.hidden_states[-1], "hidden_states": out.hidden_states}
    result["pooler_output"] = bert.pooler(out.hidden_states[-1])
    if hasattr(out, "prediction_logits"):
        result["prediction_logits"] = out.prediction_logits
        result["seq_relationship_logits"] = out.seq_relationship_logits
    return result


def max_diff(a: torch.Tensor, b: torch.Tensor, real: torch.Tensor | None = None) -> float:
    """Max abs difference, over the real positions [B, T] only when ``real`` is given."""
    if real is not None:
        a, b = a[real], b[real]
    return (a - b).abs().max().item()


def assert_outputs_match(ours, ref: dict, real: torch.Tensor | None) -> None:
    assert max_diff(ours.last_hidden_state, ref["last_hidden_state"], real) < TOL
    assert max_diff(ours.pooler_output, ref["pooler_output"]) < TOL
    if ours.hidden_states is not None:
        assert len(ours.hidden_states) == len(ref["hidden_states"])
        for mine, theirs in zip(ours.hidden_states, ref["hidden_states"], strict=True):
            assert max_diff(mine, theirs, real) < TOL
    if "prediction_logits" in ref:
        assert max_diff(ours.prediction_logits, ref["prediction_logits"], real) < TOL
        assert max_diff(ours.seq_relationship_logits, ref["seq_relationship_logits"]) < TOL


@pytest.mark.parametrize("cls_name", ["BertModel", "BertForPreTraining"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_forward_matches_transformers(cls_name: str, config_name: str) -> None:
    ours, ref = build_pair(cls_name, config_name, seed=1)
    input_ids, attention_mask, token_type_ids = make_batch(ours.config, seed=2)
    real = attention_mask.bool()
    with torch.no_grad():
        expected = run_reference(ref, input_ids, attention_mask, token_type_ids)
        fast = ours(input_ids, attention_mask, token_type_ids)
        inspected = ours(input_ids, attention_mask, token_type_ids, output_hidden_states=True)
    assert fast.hidden_states is None
    assert_outputs_match(fast, expected, real)
    # Asking for hidden states computes every position, padding included, exactly as transformers.
    assert_outputs_match(inspected, expected, real=None)
    if cls_name == "BertModel":  # otherwise padded positions are not computed: zeros
        assert torch.all(fast.last_hidden_state[~real] == 0)
    else:  # the pre-training model (checkpoint parity) computes every position, always
        assert_outputs_match(fast, expected, real=None)


@pytest.mark.parametrize("config_name", ["L2-H32-A4-gelu", "L3-H48-A3-gelu_new"])
def test_unpadded_batch_and_default_arguments(config_name: str) -> None:
    """No mask and no segments mean: every token real, all segment 0."""
    ours, ref = build_pair("BertModel", config_name, seed=3)
    input_ids, _, _ = make_batch(ours.config, seed=4, lengths=(7, 7, 7))
    with torch.no_grad():
        expected = run_reference(ref, input_ids, torch.ones_like(input_ids), torch.zeros_like(input_ids))
        for output_hidden_states in (False, True):
            out = ours(input_ids, output_hidden_states=output_hidden_states)
            assert_outputs_match(out, expected, real=None)
            out = ours(input_ids, torch.ones_like(input_ids), output_hidden_states=output_hidden_states)
            assert_outputs_match(out, expected, real=None)


def real_position_loss(out, real: torch.Tensor, seed: int) -> torch.Tensor:
    """A scalar that depends on every output at real positions only, with random weights."""
    generator = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for name in ("last_hidden_state", "pooler_output", "prediction_logits", "seq_relationship_logits"):
        value = out.get(name) if isinstance(out, dict) else getattr(out, name, None)
        if value is None:
            continue
        if value.dim() == 3:  # per token: keep real positions only
            value = value[real]
        weights = torch.randn(value.shape, generator=generator)
        loss = loss + (value * weights).sum() / value.shape[0]
    return loss


@pytest.mark.parametrize("cls_name", ["BertModel", "BertForPreTraining"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_gradients_match_transformers(cls_name: str, config_name: str) -> None:
    ours, ref = build_pair(cls_name, config_name, seed=5)
    input_ids, attention_mask, token_type_ids = make_batch(ours.config, seed=6)
    real = attention_mask.bool()
    real_position_loss(ours(input_ids, attention_mask, token_type_ids), real, seed=7).backward()
    real_position_loss(run_reference(ref, input_ids, attention_mask, token_type_ids), real, seed=7).backward()
    ref_params = dict(ref.named_parameters(remove_duplicate=False))
    assert all(param.grad is not None for param in ours.parameters())
    for name, grad in named_grads(ours).items():
        theirs = ref_params[name].grad
        assert theirs is not None, name
        assert max_diff(grad, theirs) < TOL, f"{name}: {max_diff(grad, theirs):.2e}"
        assert grad.abs().max() > 0 or "token_type" in name, f"{name}: no gradient reached it"


@pytest.mark.parametrize("cls_name", ["BertModel", "BertForPreTraining"])
def test_save_pretrained_loads_in_transformers(cls_name: str, tmp_path) -> None:
    ours, _ = build_pair(cls_name, "L2-H32-A4-gelu", seed=8)
    ours.save_pretrained(tmp_path)
    ref = getattr(transformers, cls_name).from_pretrained(tmp_path, attn_implementation="eager").eval()
    input_ids, attention_mask, token_type_ids = make_batch(ours.config, seed=9)
    with torch.no_grad():
        expected = run_reference(ref, input_ids, attention_mask, token_type_ids)
        out = ours(input_ids, attention_mask, token_type_ids, output_hidden_states=True)
    assert_outputs_match(out, expected, real=None)
    # What we wrote, we read back identically.
    again = type(ours).from_pretrained(tmp_path).eval()
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name


@pytest.mark.parametrize("cls_name", ["BertModel", "BertForPreTraining"])
def test_transformers_save_pretrained_loads_in_ours(cls_name: str, tmp_path) -> None:
    _, ref = build_pair(cls_name, "L3-H48-A3-gelu_new", seed=10)
    ref.save_pretrained(tmp_path)
    ours = MODEL_CLASSES[cls_name].from_pretrained(tmp_path).eval()
    input_ids, attention_mask, token_type_ids = make_batch(ours.config, seed=11)
    with torch.no_grad():
        expected = run_reference(ref, input_ids, attention_mask, token_type_ids)
        out = ours(input_ids, attention_mask, token_type_ids, output_hidden_states=True)
    assert_outputs_match(out, expected, real=None)


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        (dict(), 109_482_240),  # BERT-Base
        (
            dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
            335_141_888,
        ),
    ],
    ids=["base", "large"],
)
def test_num_parameters(sizes: dict, expected: int) -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = BertModel(BertConfig(**sizes))
    assert model.num_parameters() == expected
    with torch.device("meta"):
        pretraining = BertForPreTraining(BertConfig(**sizes))
    # The heads add the MLM transform (H*H + H + 2H), its output bias (V) and NSP (2H + 2); the
    # decoder is tied to the word embeddings and counted once.
    H, V = model.config.hidden_size, model.config.vocab_size
    assert pretraining.num_parameters() == expected + H * H + 3 * H + V + 2 * H + 2


def test_left_padded_batch_is_computed_like_the_reference() -> None:
    """A row starting with padding pools a padded position: computed as transformers does."""
    ours, ref = build_pair("BertModel", "L2-H32-A4-gelu", seed=12)
    input_ids, attention_mask, token_type_ids = (t.flip(1) for t in make_batch(ours.config, seed=13))
    with torch.no_grad():
        expected = run_reference(ref, input_ids, attention_mask, token_type_ids)
        out = ours(input_ids, attention_mask, token_type_ids)
    assert_outputs_match(out, expected, real=None)


# -- the training path: dropout ----------------------------------------------------------------


def test_keep_mask_drops_at_rate_p() -> None:
    torch.manual_seed(0)
    like = torch.empty(1000, 1000)
    for p in (0.1, 0.5):
        mask, keep = kernels.keep_mask(like, p)
        assert mask.shape == like.shape and mask.dtype == like.dtype
        assert set(mask.unique().tolist()) == {0.0, 1.0}
        assert abs(keep - (1 - p)) < 2**-16
        # 1e6 Bernoulli draws: the standard deviation of the kept fraction is <= 5e-4
        assert abs(mask.mean().item() - keep) < 3e-3
    # independent draws: neighbouring elements (same 64-bit word) are uncorrelated
    mask, _ = kernels.keep_mask(like, 0.5)
    pairs = mask.view(-1, 2)
    assert abs((pairs[:, 0] * pairs[:, 1]).mean().item() - 0.25) < 3e-3


def test_dropout_is_unbiased_and_off_in_eval() -> None:
    torch.manual_seed(0)
    dropout = kernels.Dropout(0.1)
    x = torch.full((500, 1000), 2.0)
    y = dropout(x)
    assert abs(y.mean().item() - 2.0) < 0.01  # kept values are scaled by 1 / (1 - p)
    assert abs((y == 0).float().mean().item() - 0.1) < 3e-3
    assert torch.equal(dropout.eval()(x), x)


def test_attention_dropout_is_real_and_seeded() -> None:
    config, _ = make_config("L2-H32-A4-gelu")
    config.attention_probs_dropout_prob = 0.3  # attention dropout only
    model = BertModel(config)
    randomize_(model, seed=14)
    input_ids, attention_mask, token_type_ids = make_batch(config, seed=15)
    real = attention_mask.bool()
    with torch.no_grad():
        deterministic = model.eval()(input_ids, attention_mask, token_type_ids).last_hidden_state
        model.train()
        torch.manual_seed(1)
        first = model(input_ids, attention_mask, token_type_ids).last_hidden_state
        second = model(input_ids, attention_mask, token_type_ids).last_hidden_state
        torch.manual_seed(1)
        again = model(input_ids, attention_mask, token_type_ids).last_hidden_state
    assert max_diff(first, deterministic, real) > 1e-2
    assert max_diff(first, second, real) > 1e-2
    assert torch.equal(first, again)


@pytest.mark.parametrize("config_name", ["L2-H32-A4-gelu", "L3-H48-A3-gelu_new"])
def test_training_path_with_dropout_masks_of_ones_matches_transformers(config_name: str, monkeypatch) -> None:
    """Train mode with p > 0 takes our own attention and dropout code; with masks that keep
    everything it must compute exactly the reference's function and gradients."""
    ours, ref = build_pair("BertModel", config_name, seed=16)
    ours.config.hidden_dropout_prob = ours.config.attention_probs_dropout_prob = 0.1
    ours = BertModel(ours.config).eval()
    ours.load_state_dict(ref.state_dict(), strict=False)
    calls = []

    def keep_everything(like: torch.Tensor, p: float):
        calls.append(like.dim())
        return torch.ones_like(like), 1.0

    monkeypatch.setattr(kernels, "keep_mask", keep_everything)
    ours.train()
    input_ids, attention_mask, token_type_ids = make_batch(ours.config, seed=17)
    real = attention_mask.bool()
    out = ours(input_ids, attention_mask, token_type_ids)
    assert 4 in calls and 2 in calls  # attention probabilities and hidden states went through dropout
    expected = run_reference(ref, input_ids, attention_mask, token_type_ids)
    assert_outputs_match(out, expected, real)
    real_position_loss(out, real, seed=18).backward()
    real_position_loss(expected, real, seed=18).backward()
    ref_params = dict(ref.named_parameters())
    for name, grad in named_grads(ours).items():
        assert max_diff(grad, ref_params[name].grad) < TOL, name


def test_group_lengths_rounded_to_eight_compute_the_same(monkeypatch) -> None:
    """CUDA rounds attention group lengths up to a multiple of 8 (fewer kernel plans); the extra
    positions are masked keys, so the outputs are the reference's."""
    ours, ref = build_pair("BertModel", "L2-H32-A4-gelu", seed=21)
    layouts = []
    real_tokens = model_lib.TokenLayout.real_tokens.__func__

    def rounded(cls, attention_mask, multiple=1):
        layouts.append(real_tokens(cls, attention_mask, multiple=8))
        return layouts[-1]

    monkeypatch.setattr(model_lib.TokenLayout, "real_tokens", classmethod(rounded))
    input_ids, attention_mask, token_type_ids = make_batch(ours.config, seed=22, lengths=[13, 11, 9, 3])
    out = ours(input_ids, attention_mask, token_type_ids)
    assert layouts and all(g.length % 8 == 0 for g in layouts[-1].groups)
    assert_outputs_match(
        out, run_reference(ref, input_ids, attention_mask, token_type_ids), attention_mask.bool()
    )


@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("lengths", [LENGTHS, (6, 6, 6)])  # padded groups; a batch without padding
def test_cls_only_pools_what_the_reference_pools(config_name: str, lengths) -> None:
    """The sentence classifier's path: the last layer at [CLS] only gives the reference's pooled
    output and [CLS] state, and the reference's gradients (dropout 0)."""
    ours, ref = build_pair("BertModel", config_name, seed=31)
    input_ids, attention_mask, token_type_ids = make_batch(ours.config, seed=32, lengths=lengths)
    expected = run_reference(ref, input_ids, attention_mask, token_type_ids)
    ours.train(), ref.train()  # dropout is 0: train mode only switches the attention code path
    out = ours(input_ids, attention_mask, token_type_ids, cls_only=True)
    assert out.last_hidden_state.shape == (len(lengths), 1, ours.config.hidden_size)
    assert max_diff(out.last_hidden_state[:, 0], expected["last_hidden_state"][:, 0]) < TOL
    assert max_diff(out.pooler_output, expected["pooler_output"]) < TOL
    weights = torch.randn(out.pooler_output.shape, generator=torch.Generator().manual_seed(33))
    (out.pooler_output * weights).sum().backward()
    (expected["pooler_output"] * weights).sum().backward()
    ref_params = dict(ref.named_parameters())
    for name, grad in named_grads(ours).items():
        theirs = ref_params[name].grad
        if theirs is not None:
            assert max_diff(grad, theirs) < TOL * max(1.0, theirs.abs().max().item()), name


def test_cls_only_with_attention_dropout_masks_of_ones(monkeypatch) -> None:
    """With attention dropout the [CLS] queries take our dropout code; masks that keep everything
    must give the full path's pooled output."""
    ours, _ = build_pair("BertModel", "L2-H32-A4-gelu", seed=34)
    ours.config.attention_probs_dropout_prob = 0.1
    ours = BertModel(ours.config)
    randomize_(ours, 34)
    monkeypatch.setattr(kernels, "keep_mask", lambda like, p: (torch.ones_like(like), 1.0))
    input_ids, attention_mask, token_type_ids = make_batch(ours.config, seed=35)
    ours.train()
    full = ours(input_ids, attention_mask, token_type_ids).pooler_output
    fast = ours(input_ids, attention_mask, token_type_ids, cls_only=True).pooler_output
    assert max_diff(fast, full) < TOL


def varlen_by_sdpa(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k):
    """What ``varlen_attn`` computes, row by row with SDPA (the flash kernel is CUDA-only)."""
    assert q.dim() == k.dim() == 3 and cu_seq_q.dtype == cu_seq_k.dtype == torch.int32
    assert len(cu_seq_q) == len(cu_seq_k) and int(cu_seq_q[-1]) == len(q) and int(cu_seq_k[-1]) == len(k)
    rows = []
    for i in range(len(cu_seq_q) - 1):
        qs, ks = slice(cu_seq_q[i], cu_seq_q[i + 1]), slice(cu_seq_k[i], cu_seq_k[i + 1])
        assert qs.stop - qs.start <= max_q and ks.stop - ks.start <= max_k
        y = torch.nn.functional.scaled_dot_product_attention(
            q[qs].transpose(0, 1), k[ks].transpose(0, 1), v[ks].transpose(0, 1)
        )
        rows.append(y.transpose(0, 1))
    return torch.cat(rows)


@pytest.mark.parametrize("cls_only", [False, True])
@pytest.mark.parametrize("lengths", [LENGTHS, (6, 6, 6)])
def test_varlen_attention_path_computes_the_reference(cls_only: bool, lengths, monkeypatch) -> None:
    """On CUDA in half precision attention runs flash attention's varlen kernel over the packed
    tokens. Here the kernel is replaced by its definition (row-by-row SDPA) to check what is ours:
    the packed order, the cumulative lengths, the [CLS]-only queries and the way back."""
    calls = []

    def recording(*args):
        calls.append(args[3].tolist())
        return varlen_by_sdpa(*args)

    monkeypatch.setattr(kernels, "varlen_attn", recording)
    monkeypatch.setattr(kernels, "varlen_supported", lambda x: True)
    ours, ref = build_pair("BertModel", "L2-H32-A4-gelu", seed=36)  # head size 8
    input_ids, attention_mask, token_type_ids = make_batch(ours.config, seed=37, lengths=lengths)
    expected = run_reference(ref, input_ids, attention_mask, token_type_ids)
    out = ours(input_ids, attention_mask, token_type_ids, cls_only=cls_only)
    assert len(calls) == ours.config.num_hidden_layers
    assert calls[-1] == (
        list(range(len(lengths) + 1))
        if cls_only
        else [0, *itertools.accumulate(sorted(lengths, reverse=True))]
    )
    assert max_diff(out.pooler_output, expected["pooler_output"]) < TOL
    if not cls_only:
        assert max_diff(out.last_hidden_state, expected["last_hidden_state"], attention_mask.bool()) < TOL


def test_varlen_attention_is_not_taken_with_attention_dropout(monkeypatch) -> None:
    """The varlen kernel has no dropout: training with attention dropout keeps the grids."""
    monkeypatch.setattr(kernels, "varlen_attn", lambda *args: pytest.fail("varlen taken with dropout"))
    monkeypatch.setattr(kernels, "varlen_supported", lambda x: True)
    config, _ = make_config("L2-H32-A4-gelu")
    config.attention_probs_dropout_prob = 0.1
    model = BertModel(config).train()
    input_ids, attention_mask, token_type_ids = make_batch(config, seed=38)
    model(input_ids, attention_mask, token_type_ids).pooler_output.sum().backward()
    model.eval()
    with pytest.raises(pytest.fail.Exception):  # and evaluation takes it
        model(input_ids, attention_mask, token_type_ids)


def attention_by_autograd(q, k, v, key_mask, p):
    """attention_with_dropout's function written out for autograd (what it computed before it
    kept its own backward)."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
    mask, keep = kernels.keep_mask(scores, p)
    return (scores.softmax(-1) * mask @ v) / keep


@pytest.mark.parametrize("queries", [9, 1])  # every token attends; [CLS] only
def test_attention_with_dropout_keeps_bools_and_computes_autograds_numbers(queries: int, monkeypatch) -> None:
    """The same mask (same seed), output and gradients as autograd on the written-out formula,
    computed a few rows at a time, with no [b, heads, T, T] float tensor kept for the backward."""
    monkeypatch.setattr(kernels, "_ATTENTION_CHUNK", 2 * 3 * 9 * 9)  # two rows a chunk: 3 chunks
    generator = torch.Generator().manual_seed(41)
    b, heads, T, d = 5, 3, 9, 4
    q0, k0, v0 = (torch.randn(b, heads, n, d, generator=generator) for n in (queries, T, T))
    key_mask = torch.rand(b, 1, 1, T, generator=generator) > 0.3
    key_mask[:, ..., 0] = True
    weights = torch.randn(b, heads, queries, d, generator=generator)
    results, saved = [], []
    for attention in (attention_by_autograd, kernels.attention_with_dropout):
        saved.append([])
        q, k, v = (t.clone().requires_grad_() for t in (q0, k0, v0))
        torch.manual_seed(7)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved[-1].append(t) or t, lambda t: t):
            y = attention(q, k, v, key_mask, 0.2)
        (y * weights).sum().backward()
        results.append((y.detach(), q.grad, k.grad, v.grad))
    for ours, expected in zip(results[1], results[0], strict=True):
        assert max_diff(ours, expected) < 1e-6
    assert not torch.equal(results[1][0], attention_by_autograd(q0, k0, v0, key_mask, 0.0))  # dropped
    # autograd keeps [b, heads, queries, T] floats (the probabilities); ours only q, k, v and bools
    square = (b, heads, queries, T)
    kept = [{(tuple(t.shape), t.dtype) for t in tensors} for tensors in saved]
    assert (square, torch.float32) in kept[0]
    assert (square, torch.float32) not in kept[1] and (square, torch.bool) in kept[1]


def test_dropout_keeps_its_mask_as_bools_with_the_same_numbers() -> None:
    """In training Dropout keeps a bool mask for the backward (not a float one), same output and gradient."""
    x0, weights = torch.randn(6, 40), torch.randn(6, 40)
    results, saved = [], []
    for use_module in (False, True):
        x = x0.clone().requires_grad_()
        torch.manual_seed(9)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            if use_module:
                y = kernels.Dropout(0.3).train()(x)
            else:
                mask, keep = kernels.keep_mask(x, 0.3)
                y = x * mask.mul_(1.0 / keep)
        (y * weights).sum().backward()
        results.append((y.detach(), x.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert [t.dtype for t in saved] == [torch.float32, torch.bool]  # the formula's mask, then ours


def test_to_grids_keeps_no_copy_of_the_tokens_for_the_backward() -> None:
    """Re-padding into grids has index_copy_'s output and gradient, keeping only the slot indices."""
    attention_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    layout = model_lib.TokenLayout.real_tokens(attention_mask)
    x0 = torch.randn(int(attention_mask.sum()), 6)
    weights = torch.randn(layout.groups[-1].offset + layout.groups[-1].rows * layout.groups[-1].length, 6)
    x, saved = x0.clone().requires_grad_(), []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        grids = layout.to_grids(x)
    (grids * weights).sum().backward()
    expected = torch.zeros_like(weights).index_copy_(0, layout.slots, x0)
    assert torch.equal(grids.detach(), expected)
    assert torch.equal(x.grad, weights[layout.slots])
    assert [t.dtype for t in saved] == [torch.int64]
