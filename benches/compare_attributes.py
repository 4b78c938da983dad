#!/usr/bin/env python3
"""Attribute extraction against llama.cpp and Hugging Face transformers on the same model file
and the same prompt token ids, in one invocation. Prints one markdown table.

Rows: the first N rows of examples/product_attributes/test.csv (product titles from
Walmart-Amazon with their brand and category; see its SOURCE.txt) with the example's config
(`brand`: a span of the title, `category`: one of eight options), zero-shot or with the first
K rows of seed.csv as fixed examples. autolabel-local dumps every row's request (`plan
--dump-requests`: prompt ids, answer token budget, end tokens); then
- autolabel-local labels the rows (`run --fresh`, release build): `{"brand": ..., "category":
  ...}` generated under one grammar (the brand a run of the title's words, the category an
  option), timed from its summary;
- llama.cpp (PyPI `llama-cpp-python`, in a child process so its peak RSS is its own), greedy,
  the same budget, the prompt prefix shared with the previous row kept in its KV cache, under a
  GBNF grammar from Autolabel's own output schema for these attributes (brand a string,
  category an enum): the answer always parses, the brand may be any string;
- transformers (PyPI `transformers` + `torch` + `gguf`; the GGUF dequantized to float32) greedy
  `generate` with the same budget, the answer parsed as JSON afterwards (Autolabel's local way).
For every engine: rows/s, peak RSS, answers that do not parse (or lack a key), categories that
are not an option, brands that are not in the title, and the accuracy of each attribute (exact
match, as Autolabel's attribute metrics) against the ground truth.

Usage (a venv with llama-cpp-python; another with torch, transformers, gguf and accelerate):
    /tmp/refenv/bin/python benches/compare_attributes.py [--model smollm2-135m-instruct] \
        [--rows 100] [--shots 0] [--threads 2] [--ours 8:f32] \
        [--peers llama.cpp-json,transformers] [--hf-python /tmp/hfenv/bin/python]
"""
import argparse, csv, json, os, re, subprocess, sys, tempfile

from compare_peers import model_path  # benches/compare_peers.py: the cached file of a model card
from generation_peers import llama_generate, run_peers, transformers_worker

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# BIN=<a copy of the binary> runs that copy (no build), so the checkout can change meanwhile.
BIN = os.environ.get("BIN") or os.path.join(ROOT, "target", "release", "autolabel-local")
EXAMPLE = os.path.join(ROOT, "examples", "product_attributes")


def output_schema(attributes):
    """Autolabel's `_construct_attribute_json` schema: a string per attribute, an enum for one with
    options and task_type classification (options without a type are a classification here)."""
    props = {}
    for a in attributes:
        if a.get("options"):
            props[a["name"]] = {"title": a["name"], "enum": a["options"]}
        else:
            props[a["name"]] = {"title": a["name"], "type": "string"}
    return {"type": "object", "properties": props, "required": [a["name"] for a in attributes],
            "additionalProperties": False}


def llama_worker(spec, threads):
    def grammars(llama_cpp, reqs):
        g = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(spec["schema"]), verbose=False)
        return [g] * len(reqs)

    llama_generate(spec, threads, grammars)


def parse(answer, names):
    """The answer as {name: str}, or None when it is not a JSON object with every key (after
    stripping text around the outermost braces, as a parser of free text would)."""
    s = answer.strip()
    a, b = s.find("{"), s.rfind("}")
    if a < 0 or b < a:
        return None
    try:
        d = json.loads(s[a:b + 1])
    except ValueError:
        return None
    if not isinstance(d, dict) or any(n not in d for n in names):
        return None
    return {n: str(d[n]).strip() for n in names}


def score(answers, rows, options):
    unparsed = bad_option = outside = right_brand = right_cat = 0
    for a, row in zip(answers, rows):
        d = parse(a, ["brand", "category"]) if isinstance(a, str) else a
        if d is None:
            unparsed += 1
            continue
        bad_option += d["category"] not in options
        outside += d["brand"] not in row["title"]
        right_brand += d["brand"] == row["brand"]
        right_cat += d["category"] == row["category"]
    n = len(rows)
    return {"unparsed": unparsed, "bad_option": bad_option, "outside": outside,
            "brand": right_brand / n, "category": right_cat / n}


def run_ours(config, data, model, batch, dtype, tmp):
    out = os.path.join(tmp, f"ours-b{batch}-{dtype}.csv")
    cmd = ["/usr/bin/time", "-f", "RSS %M", BIN, "run", "--config", config, "--data", data, "--model", model,
           "--batch-size", str(batch), "--dtype", dtype, "--fresh", "--out", out]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode not in (0, 2):
        sys.exit(p.stderr)
    m = re.search(r"labeled (\d+)/(\d+) rows in ([0-9.]+) s", p.stderr)
    rss = int(re.search(r"RSS (\d+)", p.stderr).group(1)) / 1024
    with open(out, newline="") as f:
        answers = [{"brand": r["brand_label"], "category": r["category_label"]} if r["brand_label"] or r["category_label"]
                   else None for r in csv.DictReader(f)]
    return {"answers": answers, "seconds": float(m.group(3)), "rss_mb": rss}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--shots", type=int, default=0, help="fixed examples from seed.csv")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--ours", default="8:f32", help="autolabel-local runs as batch:dtype")
    ap.add_argument("--peers", default="llama.cpp-json,transformers")
    ap.add_argument("--hf-python", default=sys.executable, help="python with torch, transformers and gguf")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        kind, spec = a.worker[0], json.load(open(a.worker[1]))
        if kind == "transformers":
            return transformers_worker(spec, a.threads)
        return llama_worker(spec, a.threads)
    if not os.environ.get("BIN"):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    model = model_path(a.model)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores, {cpu}; model {a.model} ({os.path.basename(model)}); "
          f"the first {a.rows} rows of examples/product_attributes/test.csv, {a.shots}-shot\n")
    print("| engine | rows/s | peak RSS MB | answers not parsed | category not an option | brand not in the title | brand accuracy | category accuracy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        c = json.load(open(os.path.join(EXAMPLE, "config.json")))
        if a.shots:
            c["prompt"].update(few_shot_examples=os.path.join(EXAMPLE, "seed.csv"), few_shot_selection="fixed",
                               few_shot_num=a.shots)
        config = os.path.join(tmp, "config.json")
        json.dump(c, open(config, "w"))
        with open(os.path.join(EXAMPLE, "test.csv"), newline="") as f:
            rows = list(csv.DictReader(f))[:a.rows]
        data = os.path.join(tmp, "rows.csv")
        with open(data, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["title", "brand", "category"])
            w.writeheader()
            w.writerows(rows)
        reqs = os.path.join(tmp, "requests.jsonl")
        subprocess.run([BIN, "plan", "--config", config, "--data", data, "--model", model, "--sample", "1",
                        "--dump-requests", reqs], capture_output=True, check=True, cwd=ROOT)
        attributes = c["prompt"]["attributes"]
        options = next(x["options"] for x in attributes if x["name"] == "category")

        def show(engine, r):
            s = score(r["answers"], rows, options)
            n = len(r["answers"])
            print(f"| {engine} | {n / r['seconds']:.2f} | {r['rss_mb']:.0f} | {s['unparsed']}/{n} | {s['bad_option']} | "
                  f"{s['outside']} | {s['brand']:.3f} | {s['category']:.3f} |", flush=True)

        for item in a.ours.split(","):
            b, dtype = item.split(":")
            show(f"autolabel-local --dtype {dtype}, batch {b} (one grammar: span + options)",
                 run_ours(config, data, model, int(b), dtype, tmp))
        labels = {"llama.cpp-json": "llama.cpp, Autolabel's JSON schema as a grammar",
                  "transformers": "transformers f32 generate + parse"}
        run_peers(__file__, a.peers, {"model": model, "requests": reqs, "schema": output_schema(attributes)}, labels, show, tmp, a.threads, a.hf_python)


if __name__ == "__main__":
    main()
