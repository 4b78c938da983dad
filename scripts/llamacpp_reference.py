#!/usr/bin/env python3
"""Reference label log-probabilities from llama.cpp, for tests/fixtures/llamacpp_reference.json.

Independent of autolabel-local: llama.cpp (PyPI `llama-cpp-python`) tokenizes the prompts itself
and evaluates every prompt + label sequence from scratch with logits for all positions. The KV
cache is kept in f32 (type_k/type_v = 0) so the reference carries less of llama.cpp's own noise.

Run by hand (not needed by the tests):
    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install numpy llama-cpp-python
    cargo run --release -- models          # shows where the model cards' files are cached
    /tmp/refenv/bin/python scripts/llamacpp_reference.py \
        --model smollm2-135m-instruct=PATH/SmolLM2-135M-Instruct.Q4_1.gguf \
        --model qwen2.5-coder-0.5b-instruct=PATH/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \
        --out tests/fixtures/llamacpp_reference.json
"""
import argparse, csv, json, os, sys

import llama_cpp
import numpy as np

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")

SYSTEM = {
    "smollm2-135m-instruct": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "qwen2.5-coder-0.5b-instruct": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
}


def chatml(system, user):
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def autolabel_prompt(guidelines, labels, example_line):
    return (guidelines.replace("{labels}", "\n".join(labels))
            + "\n\nYou will answer with just the correct label and nothing else.\n\n"
            + "Now I want you to label the following example:\n" + example_line)


def tasks(n_per_task):
    out = []
    with open(os.path.join(DATA, "autolabel_movie_reviews", "movie_reviews.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    # Shorter reviews keep the fixture small; take every kth to mix labels.
    rows = sorted(rows, key=lambda r: len(r["example"]))[: n_per_task * 3 : 3]
    for r in rows:
        out.append(("movie_reviews", autolabel_prompt(
            "Classify the movie review into one of the following labels:\n{labels}",
            ["positive", "negative"], f"Input: {r['example']}\nOutput:"), ["positive", "negative"], r["label"]))
    with open(os.path.join(DATA, "sms_spam", "SMSSpamCollection.tsv"), newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    for r in rows[: n_per_task * 20 : 20]:
        out.append(("sms_spam", autolabel_prompt(
            "Classify the SMS message into one of the following labels:\n{labels}",
            ["ham", "spam"], f"Message: {r[1]}\nLabel:"), ["ham", "spam"], r[0]))
    with open(os.path.join(DATA, "autolabel_small_fixtures", "civil_comments_test.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows[:n_per_task]:
        out.append(("civil_comments", autolabel_prompt(
            "Label the comment as one of the following categories:\n{labels}",
            ["toxic", "not toxic"], f"Input: {r['example']}\nOutput:"), ["toxic", "not toxic"], r["label"]))
    return out


def logprobs(llm, prompt_ids, cand_ids):
    llm.reset()
    seq = prompt_ids + cand_ids
    llm.eval(seq)
    scores = np.array(llm.scores[: len(seq)], dtype=np.float64)
    res = []
    for i, t in enumerate(cand_ids):
        row = scores[len(prompt_ids) - 1 + i]
        row = row - row.max()
        res.append(float(row[t] - np.log(np.exp(row).sum())))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", required=True, help="CARD_NAME=PATH.gguf")
    ap.add_argument("--per-task", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    fixture = {"generator": f"llama-cpp-python {llama_cpp.__version__}, f32 KV cache, logits_all",
               "models": []}
    for spec in args.model:
        name, path = spec.split("=", 1)
        llm = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=2048, type_k=0, type_v=0,
                              flash_attn=False, verbose=False)
        end = llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
        cases = []
        for task, user, labels, truth in tasks(args.per_task):
            text = chatml(SYSTEM[name], user)
            ids = llm.tokenize(text.encode(), add_bos=False, special=True)
            cands = [llm.tokenize(l.encode(), add_bos=False, special=True) + end for l in labels]
            lps = [logprobs(llm, ids, c) for c in cands]
            cases.append({"task": task, "prompt": text, "prompt_ids": ids, "labels": labels,
                          "candidate_ids": cands, "token_logprobs": lps, "truth": truth})
            print(name, task, [round(sum(l), 3) for l in lps], file=sys.stderr)
        fixture["models"].append({"name": name, "cases": cases})
    with open(args.out, "w") as f:
        json.dump(fixture, f, indent=1)


if __name__ == "__main__":
    main()
