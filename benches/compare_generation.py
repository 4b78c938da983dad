#!/usr/bin/env python3
"""Named-entity recognition by generation against llama.cpp and Hugging Face transformers on the
same model file and the same prompt token ids, in one invocation. Prints one markdown table.

Rows: the first N rows (seeded sample) of shared/data/autolabel_conll2003/test_head_small.csv with
Autolabel's conll2003 attribute_extraction config, zero-shot. autolabel-local dumps every row's
request (`plan --dump-requests`: prompt ids, answer token budget, end tokens); then
- autolabel-local labels the rows (`run --fresh`, release build) at batch 1 and 8, f32 and
  `--dtype q` (the file's quantized weights): JSON whose
  every entity is a run of whole words of the input (llguidance grammar), timed from its summary;
- llama.cpp (PyPI `llama-cpp-python`, each engine in a child process so its peak RSS is its own),
  greedy, the same budget, the prompt prefix shared with the previous row kept in its KV cache
  (llama-cpp-python reuses the longest common prefix), under
  * `json`: a GBNF grammar from the same JSON schema (every type a list of strings): output
    always parses, entities may be any string;
  * `substring`: a GBNF grammar whose entities are the alternation of every run of whole words
    of the row's text (the same language as ours, written for llama.cpp's grammar engine);
  * `substring-b8`: the same grammar through llama.cpp's batch API, 8 rows decoding together
    as parallel sequences (the common prompt prefix decoded once and copied to each sequence);
- transformers (PyPI `transformers` + `torch` + `gguf`; the GGUF dequantized to float32) greedy
  `generate` with the same budget, the answer parsed as JSON afterwards (Autolabel's local way).
Each engine's line is printed as soon as it is done (a peer that fails prints why). For every
engine: rows/s, generated tokens/s, peak RSS, answers that do not parse, entities that
are not in the input, and micro precision/recall/F1 over (type, entity text) pairs against the
ground truth (the same count for every engine; `run`'s own nervaluate report is span based).
Last, autolabel-local's constraint overhead per run (the share of generation time the model
waited for grammar masks and token choice).

Usage (a venv with llama-cpp-python and numpy; another with torch, transformers, gguf and
accelerate):
    /tmp/refenv/bin/python benches/compare_generation.py [--model smollm2-135m-instruct] \
        [--rows 24] [--threads 2] [--ours 1:f32,8:f32,1:q,8:q] \
        [--peers llama.cpp-json,llama.cpp-substring,transformers] \
        [--hf-python /tmp/hfenv/bin/python]
"""
import argparse, csv, json, os, re, subprocess, sys, tempfile
from collections import Counter

from compare_peers import model_path  # benches/compare_peers.py: the cached file of a model card
from generation_peers import llama_generate, llama_generate_batched, run_peers, transformers_worker

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DATA = os.path.join(ROOT, "..", "shared", "data")
BIN = os.environ.get("BIN") or os.path.join(ROOT, "target", "release", "autolabel-local")
CONFIG = os.path.join(DATA, "autolabel_configs", "benchmark_configs_HEAD", "conll2003.json")
ROWS = os.path.join(DATA, "autolabel_conll2003", "test_head_small.csv")


def schema(types):
    return {"type": "object", "properties": {t: {"type": "array", "items": {"type": "string"}} for t in types},
            "required": list(types), "additionalProperties": False}


def gbnf_literal(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def substring_gbnf(types, text):
    """Every entity a run of whole words of `text` (as in the text), JSON-quoted; the object
    writes every type in order with Python's json.dumps separators, as autolabel-local does."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    spans = sorted({text[words[i][0]:words[j][1]] for i in range(len(words)) for j in range(i, len(words))})
    ent = " | ".join(gbnf_literal(json.dumps(s, ensure_ascii=False)) for s in spans) or '"\\"\\""'
    parts = []
    for k, t in enumerate(types):
        key = ("" if k == 0 else ", ") + json.dumps(t) + ": ["
        parts.append(f'{gbnf_literal(key)} list? "]"')
    return "root ::= \"{\" " + " ".join(parts) + " \"}\"\nlist ::= ent (\", \" ent)*\nent ::= " + ent + "\n"


def llama_worker(spec, kind, threads):
    def grammars(llama_cpp, reqs):
        if kind == "json":
            return [llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema(spec["types"])), verbose=False)
                    for _ in reqs]
        return [llama_cpp.LlamaGrammar.from_string(substring_gbnf(spec["types"], text), verbose=False)
                for text in spec["texts"]]

    llama_generate(spec, threads, grammars)


def parse(answer, types):
    """The answer as {type: [entity, ...]}, or None when it is not such JSON (after stripping code
    fences and text around the outermost braces, as a parser of free text would)."""
    s = answer.strip()
    a, b = s.find("{"), s.rfind("}")
    if a < 0 or b < a:
        return None
    try:
        d = json.loads(s[a:b + 1])
    except ValueError:
        return None
    if not isinstance(d, dict):
        return None
    return {t: [e for e in d.get(t, []) if isinstance(e, str) and e.strip()] if isinstance(d.get(t, []), list) else []
            for t in types}


def score(answers, truths, texts, types):
    tp = n_pred = n_gold = unparsed = outside = 0
    for a, truth, text in zip(answers, truths, texts):
        gold = Counter((t, e) for t, l in (json.loads(truth) if truth else {}).items() for e in l)
        n_gold += sum(gold.values())
        d = parse(a, types) if isinstance(a, str) else a
        if d is None:
            unparsed += 1
            continue
        pred = Counter((t, e) for t, l in d.items() for e in l)
        n_pred += sum(pred.values())
        outside += sum(c for (t, e), c in pred.items() if e not in text)
        tp += sum((pred & gold).values())
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"unparsed": unparsed, "outside": outside, "entities": n_pred, "p": p, "r": r, "f1": f}


def run_ours(config, rows, model, batch, dtype, tmp):
    out = os.path.join(tmp, f"ours-b{batch}-{dtype}.csv")
    cmd = ["/usr/bin/time", "-f", "RSS %M", BIN, "run", "--config", config, "--data", ROWS, "--max-items", str(rows),
           "--sample-seed", "7", "--model", model, "--batch-size", str(batch), "--dtype", dtype, "--fresh", "--out", out]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode not in (0, 2):
        sys.exit(p.stderr)
    m = re.search(r"labeled (\d+)/(\d+) rows in ([0-9.]+) s \([0-9.]+ rows/s, ([0-9.]+) generated tokens/s\)", p.stderr)
    seconds = float(m.group(3))
    rss = int(re.search(r"RSS (\d+)", p.stderr).group(1)) / 1024
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        col = next(h for h in reader.fieldnames if h.endswith("_task_label"))
        answers = [r[col] for r in reader]
    overhead = re.search(r"constraint overhead: (.*)", p.stderr)
    return {"answers": answers, "seconds": seconds, "tokens": float(m.group(4)) * seconds, "rss_mb": rss,
            "overhead": overhead.group(1) if overhead else "not reported"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--ours", default="1:f32,8:f32,1:q,8:q", help="autolabel-local runs as batch:dtype")
    ap.add_argument("--peers", default="llama.cpp-json,llama.cpp-substring,transformers")
    ap.add_argument("--hf-python", default=sys.executable, help="python with torch, transformers and gguf")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        kind, spec = a.worker[0], json.load(open(a.worker[1]))
        if kind == "transformers":
            return transformers_worker(spec, a.threads)
        if kind.startswith("llama.cpp-substring-b"):
            grammars = lambda reqs: [substring_gbnf(spec["types"], t) for t in spec["texts"]]
            return llama_generate_batched(spec, a.threads, grammars, int(kind.rsplit("-b", 1)[1]))
        return llama_worker(spec, kind.split("-", 1)[1], a.threads)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    model = model_path(a.model)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores, {cpu}; model {a.model} ({os.path.basename(model)}); "
          f"{a.rows} rows of autolabel_conll2003/test_head_small.csv, zero-shot\n")
    print("| engine | rows/s | generated tokens/s | peak RSS MB | answers not parsed (or not ended within the budget) | entities not in the input | entities | precision | recall | F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    overheads = []
    with tempfile.TemporaryDirectory() as tmp:
        c = json.load(open(CONFIG))
        for k in ("few_shot_examples", "few_shot_num", "few_shot_selection"):
            c["prompt"].pop(k, None)
        config = os.path.join(tmp, "conll_0shot.json")
        json.dump(c, open(config, "w"))
        types = [x["name"] for x in c["prompt"]["attributes"]]
        reqs = os.path.join(tmp, "requests.jsonl")
        subprocess.run([BIN, "plan", "--config", config, "--data", ROWS, "--max-items", str(a.rows),
                        "--sample-seed", "7", "--model", model, "--sample", "1", "--dump-requests", reqs],
                       capture_output=True, check=True, cwd=ROOT)
        dumped = [json.loads(l) for l in open(reqs)]
        with open(ROWS, newline="") as f:
            all_rows = list(csv.DictReader(f))
        # The sampled rows by their line numbers (the header is line 1).
        texts = [all_rows[r["line"] - 2]["example"] for r in dumped]
        truths = [r["truth"] for r in dumped]

        def show(engine, r):
            s = score(r["answers"], truths, texts, types)
            n = len(r["answers"])
            print(f"| {engine} | {n / r['seconds']:.2f} | {r['tokens'] / r['seconds']:.1f} | {r['rss_mb']:.0f} | "
                  f"{s['unparsed']}/{n} | {s['outside']} | {s['entities']} | {s['p']:.3f} | {s['r']:.3f} | {s['f1']:.3f} |", flush=True)

        for item in a.ours.split(","):
            b, dtype = item.split(":")
            r = run_ours(config, a.rows, model, int(b), dtype, tmp)
            show(f"autolabel-local --dtype {dtype}, batch {b} (whole-word substring grammar)", r)
            overheads.append(f"autolabel-local --dtype {dtype} batch {b}: {r['overhead']}")
        labels = {"llama.cpp-json": "llama.cpp, JSON-schema grammar", "llama.cpp-substring": "llama.cpp, substring GBNF grammar",
                  "llama.cpp-substring-b8": "llama.cpp batch API, 8 sequences, substring GBNF grammar",
                  "transformers": "transformers f32 generate + parse"}
        run_peers(__file__, a.peers, {"model": model, "requests": reqs, "types": types, "texts": texts}, labels, show, tmp, a.threads, a.hf_python)
        print()
        for line in overheads:
            print(line)


if __name__ == "__main__":
    main()
