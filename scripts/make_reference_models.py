#!/usr/bin/env python3
"""Builds the tiny random-weight Hugging Face models in models/tests/fixtures/hf/ and the
reference log-probabilities our Rust scorers are tested against.

No trained T5 weights are reachable from the development machine, so correctness of the
safetensors loaders and of the T5 / Llama / Qwen2 / Mistral forward passes is checked against
Hugging Face transformers itself (an independent implementation) on tiny models with fixed seeds:

    python3 -m venv /tmp/hfref
    /tmp/hfref/bin/pip install torch transformers tokenizers safetensors
    /tmp/hfref/bin/python scripts/make_reference_models.py

(torch from PyPI pulls CUDA runtime wheels too; they are not used: everything runs on the CPU
with eager attention; weights are stored in float32 and the reference log-probs are computed
from those same weights in float64, so they carry no rounding of their own.) The script
writes, per model, a directory that looks like a
Hub snapshot (config.json, tokenizer.json, tokenizer_config.json, generation_config.json,
model.safetensors or shards + model.safetensors.index.json) and reference.json:

    {"prompts": [[ids]], "candidates": [[[ids]]],
     "logprobs": [[[log P(token i of candidate c | prompt, earlier candidate tokens)]]],
     "texts": [...], "text_ids": [[ids]]}

The tokenizers are trained here on rows of ../shared/data (SMS spam and movie reviews): a
byte-level BPE for the decoders and a SentencePiece-style Unigram for T5, with the usual special
tokens. Rerunning the script rewrites the same models and references (seeds are fixed); only the
last digits of the Unigram scores in tokenizer.json may differ (the trainer is multithreaded).
"""

import csv
import json
import os
import pathlib
import sys

import safetensors.torch
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
import transformers

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "tests" / "fixtures" / "hf"
DATA = ROOT.parent / "shared" / "data"

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def training_texts():
    texts = []
    with open(DATA / "sms_spam" / "SMSSpamCollection.tsv", encoding="utf-8") as f:
        for line in list(f)[:600]:
            texts.append(line.split("\t", 1)[-1].strip())
    with open(DATA / "autolabel_movie_reviews" / "movie_reviews.csv", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f)):
            if 0 < i <= 300:
                texts.append(row[0][:400])
    texts += ["spam", "ham", "not sure", "positive", "negative", "neutral", "Label:", "Text:"]
    return texts


PROMPTS = [
    "Text: Free entry in 2 a wkly comp to win FA Cup final tkts\nLabel:",
    "Text: ok\nLabel:",
    "Classify the message as spam or ham.\nText: Are you coming home for dinner tonight? I made soup and there is plenty left.\nLabel:",
    "Text: the movie was a long, slow and very boring affair\nLabel:",
    "Text: WINNER!! You have been selected to receive a prize. Call now.\nLabel:",
]
LABELS = ["spam", "ham", "not sure", "not spam", "positive"]


def bpe_tokenizer(texts):
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def unigram_tokenizer(texts):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=360,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    # Like the real T5 tokenizers: encoding with special tokens appends </s>.
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return tok


def widen(model, std=0.25):
    """Random init draws small weights that give near-uniform log-probs; widen them (and keep
    norm gains near 1) so that the reference log-probs differ clearly between tokens."""
    for name, p in model.named_parameters():
        if p.dim() == 1 and not name.endswith("bias"):
            p.data.normal_(1.0, 0.2)
        elif any(k in name for k in ("embed", "shared", "lm_head", "relative_attention_bias")):
            p.data.normal_(0.0, 1.0)
        else:
            p.data.normal_(0.0, std)


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


@torch.no_grad()
def decoder_reference(model, prompts, candidates):
    """log P of every candidate token given the prompt, one candidate per forward pass."""
    out = []
    for prompt, cands in zip(prompts, candidates):
        row = []
        for cand in cands:
            ids = torch.tensor([prompt + cand])
            logits = model(input_ids=ids).logits[0].double()
            lp = torch.log_softmax(logits, dim=-1)
            row.append([lp[len(prompt) - 1 + i, t].item() for i, t in enumerate(cand)])
        out.append(row)
    return out


@torch.no_grad()
def t5_reference(model, prompts, candidates, start):
    out = []
    for prompt, cands in zip(prompts, candidates):
        row = []
        for cand in cands:
            dec = torch.tensor([[start] + cand[:-1]])
            logits = model(input_ids=torch.tensor([prompt]), decoder_input_ids=dec).logits[0].double()
            lp = torch.log_softmax(logits, dim=-1)
            row.append([lp[i, t].item() for i, t in enumerate(cand)])
        out.append(row)
    return out


def build_decoder(name, config_cls, model_cls, tok, extra, shard=None, chat_template=None, bos=None):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(sum(map(ord, name)))
    vocab = tok.get_vocab_size()
    eot = tok.token_to_id("<|endoftext|>")
    cfg = config_cls(
        vocab_size=(vocab + 7) // 8 * 8 + 8,  # larger than the tokenizer, as real models pad
        bos_token_id=eot,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        attn_implementation="eager",
        **extra,
    )
    model = model_cls(cfg).eval()
    widen(model)
    model.save_pretrained(d, max_shard_size=shard) if shard else model.save_pretrained(d)
    tok.save(str(d / "tokenizer.json"))
    tc = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "model_max_length": 1024}
    if bos:
        tc["bos_token"] = bos
        tc["add_bos_token"] = True
    if chat_template:
        tc["chat_template"] = chat_template
    write_json(d / "tokenizer_config.json", tc)
    im_end = tok.token_to_id("<|im_end|>")
    prompts = [tok.encode(p).ids for p in PROMPTS]
    if bos:
        prompts = [[tok.token_to_id(bos)] + p for p in prompts]
    candidates = [[tok.encode(" " + l).ids + [im_end] for l in LABELS] for _ in PROMPTS]
    ref = decoder_reference(model.double(), prompts, candidates)
    texts = PROMPTS + [" " + l for l in LABELS]
    write_json(
        d / "reference.json",
        {
            "prompts": prompts,
            "candidates": candidates,
            "logprobs": ref,
            "texts": texts,
            "text_ids": [tok.encode(t).ids for t in texts],
            "transformers": transformers.__version__,
        },
    )


def build_t5(name, config_cls, model_cls, tok, extra, untied=False):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(sum(map(ord, name)))
    cfg = config_cls(
        vocab_size=tok.get_vocab_size() + 4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        attn_implementation="eager",
        **extra,
    )
    model = model_cls(cfg).eval()
    if untied:
        # Hub configs of t5-v1_1 / FLAN-T5 / umT5 say tie_word_embeddings=false: a separate
        # lm_head.weight and no d_model**-0.5 scaling of the decoder output. Transformers 5 always
        # ties T5 weights, so build that layout by hand and write the files ourselves.
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
        model.config.scale_decoder_outputs = False
        model.config.tie_word_embeddings = False
    # Gated-GELU stacks amplify float32 rounding with wide random weights; keep them calmer.
    widen(model, std=0.15 if extra.get("feed_forward_proj") == "gated-gelu" else 0.25)
    model.save_pretrained(d)
    if untied:
        state = {
            k: v.contiguous()
            for k, v in model.state_dict().items()
            if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
        }
        assert not torch.equal(state["lm_head.weight"], state["shared.weight"])
        safetensors.torch.save_file(state, d / "model.safetensors", metadata={"format": "pt"})
        cfg_json = json.loads((d / "config.json").read_text())
        cfg_json["tie_word_embeddings"] = False
        cfg_json.pop("scale_decoder_outputs", None)
        write_json(d / "config.json", cfg_json)
    tok.save(str(d / "tokenizer.json"))
    write_json(
        d / "tokenizer_config.json",
        {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "model_max_length": 512},
    )
    prompts = [tok.encode(p).ids for p in PROMPTS]  # ends with </s>
    candidates = [[tok.encode(l).ids for l in LABELS] for _ in PROMPTS]  # each ends with </s>
    ref = t5_reference(model.double(), prompts, candidates, start=0)
    texts = PROMPTS + LABELS
    write_json(
        d / "reference.json",
        {
            "prompts": prompts,
            "candidates": candidates,
            "logprobs": ref,
            "texts": texts,
            "text_ids": [tok.encode(t, add_special_tokens=False).ids for t in texts],
            "transformers": transformers.__version__,
        },
    )


SPIECE_TEXTS = [
    "Free entry in 2 a wkly comp to win FA Cup final tkts",
    "  leading and   repeated   spaces  ",
    "Caf\u00e9 \uff21\uff22\uff23 \u2460 full-width and circled",
    "tabs\tand\nnewlines",
    "\u00bd price! 50% off, call 0800-123",
]


def build_spiece(texts):
    """A SentencePiece Unigram model (like google/t5-v1_1-*'s spiece.model) and the ids
    SentencePiece itself gives, for testing our conversion of spiece.model into a tokenizer."""
    import io

    import sentencepiece as spm

    d = OUT.parent / "spiece"
    d.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=300,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        normalization_rule_name="nmt_nfkc",
        minloglevel=2,
    )
    (d / "spiece.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    write_json(
        d / "reference.json",
        {"texts": SPIECE_TEXTS, "ids": [sp.encode(t) for t in SPIECE_TEXTS]},
    )


def main():
    texts = training_texts()
    build_spiece(texts)
    bpe = bpe_tokenizer(texts)
    uni = unigram_tokenizer(texts)
    small = dict(
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    build_decoder(
        "tiny-llama",
        transformers.LlamaConfig,
        transformers.LlamaForCausalLM,
        bpe,
        dict(
            small,
            tie_word_embeddings=True,
            rope_theta=10000.0,
            # Llama 3.x frequency scaling, with a short original context so that all three
            # branches (kept, smoothed, divided) are exercised by head_dim 12.
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        ),
        bos="<|endoftext|>",
    )
    build_decoder(
        "tiny-qwen2",
        transformers.Qwen2Config,
        transformers.Qwen2ForCausalLM,
        bpe,
        dict(small, tie_word_embeddings=False, rope_theta=1000000.0, use_sliding_window=False),
        shard="60KB",
        chat_template=CHATML,
    )
    build_decoder(
        "tiny-mistral",
        transformers.MistralConfig,
        transformers.MistralForCausalLM,
        bpe,
        dict(small, head_dim=16, tie_word_embeddings=False, sliding_window=None),
    )
    t5_small = dict(
        d_model=32,
        d_kv=8,
        num_heads=4,
        d_ff=64,
        num_layers=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
    )
    build_t5(
        "tiny-t5",
        transformers.T5Config,
        transformers.T5ForConditionalGeneration,
        uni,
        dict(t5_small, feed_forward_proj="relu", tie_word_embeddings=True),
    )
    build_t5(
        "tiny-flan-t5",
        transformers.T5Config,
        transformers.T5ForConditionalGeneration,
        uni,
        # t5-v1_1 / FLAN-T5 style: gated GELU, untied head, and shapes that catch assumptions
        # (inner attention width 36 != d_model 32, more decoder than encoder layers).
        dict(
            t5_small,
            d_kv=12,
            num_heads=3,
            num_decoder_layers=3,
            feed_forward_proj="gated-gelu",
        ),
        untied=True,
    )
    build_t5(
        "tiny-umt5",
        transformers.UMT5Config,
        transformers.UMT5ForConditionalGeneration,
        uni,
        dict(t5_small, feed_forward_proj="gated-gelu"),
        untied=True,
    )
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    sys.exit(main())
