#!/usr/bin/env python3
"""Accuracy levers for small models, measured on the same rows: zero-shot, label-free debiasing,
few-shot examples chosen three ways (fixed, semantic similarity, label diversity), zero-shot
chain of thought (a generated explanation line, then the labels scored after it), the label
list asked in min(labels, 3) orders and averaged (--label-orders), and
combinations, for both built-in models on five shared
datasets; the peer is the same model file through llama.cpp zero-shot, labeling the way a user
of llama.cpp does (greedy generation of the answer, matched to a label).

Rows: for each dataset N evaluation rows drawn with a fixed seed from its test file, and a seed
pool of examples drawn from rows that are not evaluated (its train / validation / seed file, or
the rest of the file). The same rows and pool serve every lever. Prints one markdown table:
accuracy, macro-F1 and rows/s per dataset, model and lever, then the mean accuracy per lever.

Usage: /path/to/venv-with-llama-cpp-python/bin/python benches/levers.py [--rows 100]
        [--models smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct] [--levers none,debias,...]
        [--sets sms_spam,...]
"""
import argparse, csv, json, os, random, re, subprocess, sys, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DATA = os.path.join(ROOT, "..", "shared", "data")
BIN = os.environ.get("BIN", os.path.join(ROOT, "target", "release", "autolabel-local"))
K = 4  # few_shot_num
POOL = 200

TWEET = {
    "task_name": "TweetSentiment", "task_type": "classification",
    "dataset": {"label_column": "label", "delimiter": ","},
    "prompt": {
        "task_guidelines": "Classify the sentiment of the tweet as one of the following labels:\n{labels}",
        "output_guidelines": "You will answer with just the correct label and nothing else.",
        "labels": ["negative", "neutral", "positive"],
        "example_template": "Tweet: {example}\nSentiment: {label}"}}

# name: (config, eval file, pool file or None = the rest of the eval file, delimiter)
SETS = {
    "sms_spam": ("examples/sms_spam/config.json", "sms_spam/SMSSpamCollection.tsv", None, "\t"),
    "movie_reviews": ("examples/movie_reviews/config.json", "autolabel_movie_reviews/movie_reviews.csv", None, ","),
    "banking77": ("examples/banking77/config.json", "banking77/test.csv", "banking77/train.csv", ","),
    "tweeteval_sentiment": (TWEET, "tweeteval_sentiment/test.csv", "tweeteval_sentiment/val.csv", ","),
    "walmart_amazon": ("../shared/data/autolabel_configs/benchmark_configs_HEAD/walmart_amazon.json",
                       "autolabel_walmart_amazon/test.csv", "autolabel_walmart_amazon/seed.csv", ","),
}

# lever: (few_shot_selection or None, debiased, chain of thought). A debiased lever resumes the
# journal of the same lever without debiasing (run just before it), so both score the same model
# calls.
LEVERS = {
    "none": (None, False, False),
    "debias": (None, True, False),
    "fixed": ("fixed", False, False),
    "semantic": ("semantic_similarity", False, False),
    "semantic+debias": ("semantic_similarity", True, False),
    "label_diversity_similarity": ("label_diversity_similarity", False, False),
    "cot": (None, False, True),
    "cot+debias": (None, True, True),
    "orders": (None, False, False),
    "orders+debias": (None, True, False),
}
# Levers that ask each row with its label list in min(labels, ORDERS) rotations (--label-orders).
ORDER_LEVERS = {"orders", "orders+debias"}
ORDERS = 3

# Autolabel's chain-of-thought output guidelines (its civil_comments / squad "with_cot" configs).
COT_OUTPUT = ("Your answer will consist of an explanation, followed by the correct answer. The last line of the "
              "response should always be is JSON format with one key: {\"label\": \"the correct answer\"}.\n")


def chain_of_thought(c):
    """The config with Autolabel's chain of thought: the answer starts "Let's think step by step.",
    then the explanation line, then the label."""
    c = json.loads(json.dumps(c))
    label = c["dataset"]["label_column"]
    c["dataset"]["explanation_column"] = "explanation"
    c["prompt"]["chain_of_thought"] = True
    c["prompt"]["output_guidelines"] = COT_OUTPUT
    t = c["prompt"]["example_template"]
    assert "{%s}" % label in t, t
    c["prompt"]["example_template"] = t.replace("{%s}" % label, "Let's think step by step.\n{explanation}\n{%s}" % label)
    return c


def lever_name(lever):
    selection, _, cot = LEVERS[lever]
    return (selection or "zero") + (".cot" if cot else "") + (".orders" if lever in ORDER_LEVERS else "")


def read_rows(path, delim):
    with open(path, encoding="utf-8", newline="") as f:
        if delim == "\t":  # the SMS file is not quoted
            lines = f.read().splitlines()
            header = lines[0].split("\t")
            return header, [l.split("\t", 1) for l in lines[1:] if l]
        r = csv.reader(f, delimiter=delim)
        header = next(r)
        return header, [row for row in r]


def write_rows(path, header, rows, delim):
    with open(path, "w", encoding="utf-8", newline="") as f:
        if delim == "\t":
            f.write("\t".join(header) + "\n")
            for r in rows:
                f.write("\t".join(r) + "\n")
        else:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)


def prepare(name, n, out):
    cfg_src, test, pool_src, delim = SETS[name]
    cfg = json.load(open(os.path.join(ROOT, cfg_src))) if isinstance(cfg_src, str) else json.loads(json.dumps(cfg_src))
    for k in ["few_shot_examples", "few_shot_selection", "few_shot_num"]:
        cfg["prompt"].pop(k, None)
    cfg.pop("embedding", None)
    cfg["model"] = {"provider": "local"}
    header, rows = read_rows(os.path.join(DATA, test), delim)
    rng = random.Random(7)
    order = list(range(len(rows)))
    rng.shuffle(order)
    evaluated = [rows[i] for i in order[:n]]
    if pool_src:
        ph, prows = read_rows(os.path.join(DATA, pool_src), delim)
        assert ph == header, (ph, header)
        rng.shuffle(prows)
        pool = prows[:POOL]
    else:
        pool = [rows[i] for i in order[n:n + POOL]]
    ext = "tsv" if delim == "\t" else "csv"
    write_rows(f"{out}/{name}.eval.{ext}", header, evaluated, delim)
    write_rows(f"{out}/{name}.pool.{ext}", header, pool, delim)
    label_col = cfg["dataset"]["label_column"]
    truth = [r[header.index(label_col)].strip() for r in evaluated]
    configs = {}
    for lever, (selection, _, cot) in LEVERS.items():
        c = json.loads(json.dumps(cfg))
        if selection:
            c["prompt"]["few_shot_examples"] = f"{name}.pool.{ext}"
            c["prompt"]["few_shot_selection"] = selection
            c["prompt"]["few_shot_num"] = K
        if cot:
            c = chain_of_thought(c)
        path = f"{out}/{name}.{lever_name(lever)}.json"
        json.dump(c, open(path, "w"), indent=1)
        configs[lever] = path
    return configs, f"{out}/{name}.eval.{ext}", truth, cfg


def scores(truth, pred):
    acc = sum(t == p for t, p in zip(truth, pred)) / len(truth)
    f1s = []
    for label in sorted(set(truth)):
        tp = sum(t == label and p == label for t, p in zip(truth, pred))
        fp = sum(t != label and p == label for t, p in zip(truth, pred))
        fn = sum(t == label and p != label for t, p in zip(truth, pred))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return acc, sum(f1s) / len(f1s)


def run_lever(cfg, data, model, debias, out_csv, task, orders=1):
    t = time.time()
    flags = ["--debias", "content-free"] if debias else ["--fresh"]
    if orders > 1:
        flags += ["--label-orders", str(orders)]
    p = subprocess.run([BIN, "run", "--config", cfg, "--data", data, "--model", model, "--out", out_csv]
                       + flags, capture_output=True, text=True)
    secs = time.time() - t
    if p.returncode not in (0, 2):
        sys.exit(f"{cfg} {model}: {p.stderr}")
    with open(out_csv, encoding="utf-8", newline="") as f:
        delim = "\t" if out_csv.endswith(".tsv") else ","
        rows = list(csv.DictReader(f, delimiter=delim, quoting=csv.QUOTE_NONE if delim == "\t" else csv.QUOTE_MINIMAL))
    return [r[f"{task}_task_label"] for r in rows], secs


def match_label(text, labels):
    """The label a generated answer names, as generously as is fair: the first line equal to a
    label (ignoring case, spaces and a final period), else the one label named as a word anywhere
    in the answer; None when no label or several are named."""
    first = text.strip().split("\n")[0].strip().strip(".").strip()
    low = {l.lower(): l for l in labels}
    if first.lower() in low:
        return low[first.lower()]
    named = {l for l in labels if re.search(r"(?<![\w])" + re.escape(l.lower()) + r"(?![\w])", text.lower())}
    # A label that is part of another named label ("duplicate" in "not duplicate") does not count.
    named = {l for l in named if not any(l != m and l.lower() in m.lower() for m in named)}
    return named.pop() if len(named) == 1 else None


def llama_peer(model_path, requests, labels, stop_ids):
    """Greedy generation after each zero-shot prompt (llama-cpp-python's generate reuses the
    previous row's KV cache up to the common prefix), up to 16 tokens or the end of turn, the
    answer matched to a label by match_label; an answer naming no label counts as wrong."""
    import llama_cpp
    n_ctx = max(len(r["prompt_ids"]) for r in requests) + 32
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx, n_batch=512, n_threads=2, verbose=False)
    stops = {llm.token_eos()} | set(stop_ids)
    preds, t = [], time.time()
    for r in requests:
        out = []
        for tok in llm.generate(r["prompt_ids"], temp=0.0, top_k=1):
            if tok in stops or len(out) >= 16:
                break
            out.append(tok)
        text = llm.detokenize(out).decode("utf-8", "replace")
        preds.append(match_label(text, labels) or "<" + text + ">")
    return preds, time.time() - t


def label_selection_bench(a):
    """banking77: each row shown and scored only its k most similar labels (label_selection) for
    each k, against all 77; accuracy, macro-F1, rows/s, and the share of rows whose true label
    was among the k kept (the ceiling label selection puts on accuracy)."""
    configs, data, truth, cfg = prepare("banking77", a.rows, a.out)
    print("| model | labels scored | accuracy | macro-F1 | rows/s | true label kept |")
    print("|---|---|---:|---:|---:|---:|")
    for model in a.models.split(","):
        short = model.split("-")[0]
        for k in [0] + [int(x) for x in a.label_selection.split(",")]:
            c = json.load(open(configs["none"]))
            if k:
                c["prompt"]["label_selection"] = True
                c["prompt"]["label_selection_count"] = k
            path = f"{a.out}/banking77.ls{k}.json"
            json.dump(c, open(path, "w"), indent=1)
            out_csv = f"{a.out}/banking77.{short}.ls{k}.csv"
            pred, secs = run_lever(path, data, model, False, out_csv, cfg["task_name"])
            with open(out_csv, encoding="utf-8", newline="") as f:
                kept = [json.loads(r[f"{cfg['task_name']}_task_label_logprobs"] or "{}")
                        for r in csv.DictReader(f)]
            recall = sum(t in k_ for t, k_ in zip(truth, kept)) / len(truth)
            acc, f1 = scores(truth, pred)
            print(f"| {short} | {k or 'all 77'} | {acc:.3f} | {f1:.3f} | {len(truth) / secs:.2f} | {recall:.3f} |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--models", default="smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--levers", default=",".join(LEVERS))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--label-selection", help="instead of the levers: banking77 with label_selection_count = each of these (e.g. 5,10,20) against all labels")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "levers-bench"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.label_selection:
        return label_selection_bench(a)
    results = []  # (set, model, lever, acc, f1, rows/s)
    for name in a.sets.split(","):
        configs, data, truth, cfg = prepare(name, a.rows, a.out)
        task = cfg["task_name"]
        ext = data.rsplit(".", 1)[1]
        for model in a.models.split(","):
            short = model.split("-")[0]
            for lever in a.levers.split(","):
                selection, debias, cot = LEVERS[lever]
                out_csv = f"{a.out}/{name}.{short}.{lever_name(lever)}.{ext}"
                orders = min(len(cfg["prompt"]["labels"]), ORDERS) if lever in ORDER_LEVERS else 1
                pred, secs = run_lever(configs[lever], data, model, debias, out_csv, task, orders)
                acc, f1 = scores(truth, pred)
                # A debiased lever's time is its base lever's (the model calls are shared).
                speed = next(r[5] for r in reversed(results) if r[1] == short and r[0] == name
                             and r[2] in LEVERS and lever_name(r[2]) == lever_name(lever)) if debias else len(truth) / secs
                results.append((name, short, lever, acc, f1, speed))
                print(f"{name} {short} {lever}: acc {acc:.3f} f1 {f1:.3f} {speed:.2f} rows/s", file=sys.stderr)
            if not a.no_peer:
                req = f"{a.out}/{name}.{short}.requests.jsonl"
                subprocess.run([BIN, "plan", "--config", configs["none"], "--data", data, "--model", model,
                                "--dump-requests", req], check=True, capture_output=True)
                requests = [json.loads(l) for l in open(req)]
                cache = os.environ.get("AUTOLABEL_LOCAL_CACHE", os.path.expanduser("~/.cache/autolabel-local"))
                folder = os.path.join(cache, "models", model)
                model_path = os.path.join(folder, next(f for f in os.listdir(folder) if f.endswith(".gguf")))
                chat_end = [requests[0]["candidate_ids"][0][-1]]  # the end-of-turn token every answer ends with
                preds, secs = llama_peer(model_path, requests, requests[0]["labels"], chat_end)
                acc, f1 = scores([r["truth"] for r in requests], preds)
                unmatched = sum(p.startswith("<") for p in preds) / len(preds)
                results.append((name, short, "llama.cpp zero-shot", acc, f1, len(requests) / secs))
                print(f"{name} {short} llama.cpp: acc {acc:.3f} f1 {f1:.3f} unmatched {unmatched:.2f}", file=sys.stderr)
    print("| dataset | model | lever | accuracy | macro-F1 | rows/s |")
    print("|---|---|---|---:|---:|---:|")
    for r in results:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.2f} |")
    print()
    print("| model | lever | mean accuracy | mean macro-F1 |")
    print("|---|---|---:|---:|")
    for model in dict.fromkeys(r[1] for r in results):
        for lever in dict.fromkeys(r[2] for r in results):
            sel = [r for r in results if r[1] == model and r[2] == lever]
            if sel:
                print(f"| {model} | {lever} | {sum(r[3] for r in sel) / len(sel):.3f} | {sum(r[4] for r in sel) / len(sel):.3f} |")


if __name__ == "__main__":
    main()
