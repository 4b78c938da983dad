#!/usr/bin/env python3
"""Multi-label classification against llama.cpp and Hugging Face transformers on the same model
file and the same prompt token ids, in one invocation. Prints one markdown table.

Rows: the first N rows of shared/data/autolabel_twitter_emotion/test.csv (SemEval-2018 E-c
tweets, 12 emotions) with Autolabel's twitter-emotion config (examples/twitter_emotion), zero-shot
or with its 3 fixed seed examples. autolabel-local dumps every row's request (`plan
--dump-requests`); then
- autolabel-local labels the rows (`run --fresh`) both ways (`prompt.multilabel_method`):
  `subset`, a non-empty subset of the labels in the config's order generated under a grammar,
  and `membership`, every label judged `label: yes` / `label: no` and scored exactly (chosen at
  P(yes) >= 0.5); with `--calibrate`, each also calibrated on the 69 rows of seed.csv
  (`calibrate`, not counted in rows/s) and run with that calibration (membership: each label
  chosen at its own cut);
- llama.cpp (PyPI `llama-cpp-python`, in a child process), greedy, the same budget, prefix reuse
  across rows, (a) under a GBNF grammar of the same language (the peer's best lever), and (b)
  free, the answer's first line split by the separator and kept when every piece is a label;
- transformers (f32, the GGUF dequantized) greedy `generate`, parsed as (b) (Autolabel's way).
For every engine: rows/s, answers that are not a subset of the labels, exact-match accuracy,
macro F1 over the 12 labels, and (ours) the AUROC of the per-label probabilities against the
true labels over every (row, label) pair (a label the subset method did not choose counts as
probability 0: it has none).

Usage (a venv with llama-cpp-python; another with torch, transformers, gguf and accelerate):
    BIN=<copy of the binary> /tmp/refenv/bin/python benches/compare_multilabel.py [--model M] \
        [--rows 100] [--shots 0] [--peers llama.cpp-grammar,llama.cpp-free,transformers] \
        [--hf-python /tmp/hfenv/bin/python] [--calibrate]
"""
import argparse, csv, json, os, re, subprocess, sys, tempfile

from compare_peers import model_path  # benches/compare_peers.py: the cached file of a model card
from generation_peers import llama_generate, run_peers, transformers_worker

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.environ.get("BIN") or os.path.join(ROOT, "target", "release", "autolabel-local")
DATA = os.path.join(ROOT, "..", "shared", "data", "autolabel_twitter_emotion")


def gbnf_literal(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def subset_gbnf(labels, sep):
    """Non-empty subsets of `labels` in their order joined by `sep` (the grammar autolabel-local
    generates under, written for llama.cpp)."""
    rules = [f"root ::= {' | '.join(f'l{i}' for i in range(len(labels)))}"]
    for i, l in enumerate(labels):
        later = " | ".join(f"l{j}" for j in range(i + 1, len(labels)))
        rules.append(f"l{i} ::= {gbnf_literal(l)}" + (f" ({gbnf_literal(sep)} ({later}))?" if later else ""))
    return "\n".join(rules) + "\n"


def llama_worker(spec, kind, threads):
    def grammars(llama_cpp, reqs):
        g = None
        if kind == "grammar":
            g = llama_cpp.LlamaGrammar.from_string(subset_gbnf(spec["labels"], spec["sep"]), verbose=False)
        return [g] * len(reqs)

    llama_generate(spec, threads, grammars)


def parse(answer, labels, sep):
    """The answer's first line split by the separator, or None when a piece is not a label."""
    lines = answer.strip().splitlines()
    first = lines[0] if lines else ""
    pieces = [p.strip() for p in first.split(sep.strip()) if p.strip()]
    if not pieces or any(p not in labels for p in pieces):
        return None
    return set(pieces)


def score(answers, truths, labels, sep):
    invalid = exact = 0
    tp = {l: 0 for l in labels}
    fp = dict(tp)
    fn = dict(tp)
    for a, t in zip(answers, truths):
        pred = parse(a, labels, sep) if isinstance(a, str) else a
        if pred is None:
            invalid += 1
            pred = set()
        exact += pred == t
        for l in labels:
            tp[l] += l in pred and l in t
            fp[l] += l in pred and l not in t
            fn[l] += l not in pred and l in t
    f1s = [2 * tp[l] / (2 * tp[l] + fp[l] + fn[l]) if tp[l] + fp[l] + fn[l] else 0.0 for l in labels]
    return {"invalid": invalid, "exact": exact / len(truths), "f1": sum(f1s) / len(labels)}


def auroc(pairs):
    """AUROC of (score, positive) pairs, ties counted half."""
    pos = [s for s, y in pairs if y]
    neg = [s for s, y in pairs if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def run_ours(config, data, model, tmp, labels, sep, calibration=None):
    out = os.path.join(tmp, "ours.csv")
    cmd = [BIN, "run", "--config", config, "--data", data, "--model", model, "--batch-size", "8", "--fresh", "--out", out]
    if calibration:
        cmd += ["--calibration", calibration]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode not in (0, 2):
        sys.exit(p.stderr)
    m = re.search(r"labeled (\d+)/(\d+) rows in ([0-9.]+) s", p.stderr)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    col = next(h for h in rows[0] if h.endswith("_task_label"))
    conf = next(h for h in rows[0] if h.endswith("_task_label_confidences"))
    probs = []
    for r in rows:
        # Every label (membership) or the chosen ones (subset), with the confidence written.
        given = {e["label"]: e["confidence"] for e in json.loads(r[conf] or "[]")}
        probs.append([given.get(l, 0.0) for l in labels])
    answers = [{x.strip() for x in r[col].split(sep.strip()) if x.strip()} for r in rows]
    return {"answers": answers, "seconds": float(m.group(3)), "probs": probs}


def calibrate_ours(config, model, tmp):
    cal = os.path.join(tmp, "cal.json")
    subprocess.run([BIN, "calibrate", "--config", config, "--data", os.path.join(DATA, "seed.csv"), "--model", model,
                    "--batch-size", "8", "--calibration", cal, "--no-plots"], capture_output=True, check=True, cwd=ROOT)
    return cal


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--shots", type=int, default=0, help="0, or the config's 3 fixed seed examples")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--peers", default="llama.cpp-grammar,llama.cpp-free,transformers")
    ap.add_argument("--hf-python", default=sys.executable, help="python with torch, transformers and gguf")
    ap.add_argument("--calibrate", action="store_true", help="also run ours calibrated on seed.csv")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        kind, spec = a.worker[0], json.load(open(a.worker[1]))
        if kind == "transformers":
            return transformers_worker(spec, a.threads)
        return llama_worker(spec, kind.split("-", 1)[1], a.threads)
    if not os.environ.get("BIN"):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    model = model_path(a.model)
    c = json.load(open(os.path.join(ROOT, "examples", "twitter_emotion", "config.json")))
    labels, sep = c["prompt"]["labels"], c["dataset"]["label_separator"]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores, {cpu}; model {a.model} ({os.path.basename(model)}); "
          f"the first {a.rows} rows of autolabel_twitter_emotion/test.csv, {a.shots}-shot\n")
    print("| engine | rows/s | answers not a label subset | exact-match accuracy | F1 macro | per-label AUROC |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        if a.shots:
            c["prompt"]["few_shot_examples"] = os.path.join(DATA, "seed.csv")
        else:
            for k in ("few_shot_examples", "few_shot_selection", "few_shot_num"):
                c["prompt"].pop(k, None)
        # The peers generate the subset: their prompts are the subset method's.
        c["prompt"]["multilabel_method"] = "subset"
        config = os.path.join(tmp, "config.json")
        json.dump(c, open(config, "w"))
        with open(os.path.join(DATA, "test.csv"), newline="") as f:
            rows = list(csv.DictReader(f))[:a.rows]
        data = os.path.join(tmp, "rows.csv")
        with open(data, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["example", "label"])
            w.writeheader()
            w.writerows(rows)
        truths = [{p.strip() for p in r["label"].split(sep.strip()) if p.strip()} for r in rows]
        reqs = os.path.join(tmp, "requests.jsonl")
        subprocess.run([BIN, "plan", "--config", config, "--data", data, "--model", model, "--sample", "1",
                        "--dump-requests", reqs], capture_output=True, check=True, cwd=ROOT)

        def show(engine, r):
            s = score(r["answers"], truths, labels, sep)
            n = len(r["answers"])
            auc = "—"
            if "probs" in r:
                auc = f"{auroc([(p, l in t) for ps, t in zip(r['probs'], truths) for p, l in zip(ps, labels)]):.3f}"
            print(f"| {engine} | {n / r['seconds']:.2f} | {s['invalid']}/{n} | {s['exact']:.3f} | {s['f1']:.3f} | {auc} |", flush=True)

        for method, what in (("subset", "label-subset grammar"), ("membership", "every label yes/no, scored")):
            c["prompt"]["multilabel_method"] = method
            mconfig = os.path.join(tmp, f"{method}.json")
            json.dump(c, open(mconfig, "w"))
            show(f"autolabel-local --dtype f32, batch 8, {method} ({what})", run_ours(mconfig, data, model, tmp, labels, sep))
            if a.calibrate:
                cal = calibrate_ours(mconfig, model, tmp)
                how = "each label at its own cut" if method == "membership" else "calibrated label probabilities"
                show(f"autolabel-local, {method}, calibrated on seed.csv ({how})",
                     run_ours(mconfig, data, model, tmp, labels, sep, cal))
        names = {"llama.cpp-grammar": "llama.cpp, the same subset grammar (GBNF)",
                 "llama.cpp-free": "llama.cpp, free text + parse", "transformers": "transformers f32 generate + parse"}
        run_peers(__file__, a.peers, {"model": model, "requests": reqs, "labels": labels, "sep": sep}, names, show, tmp, a.threads, a.hf_python)


if __name__ == "__main__":
    main()
