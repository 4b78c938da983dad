#!/usr/bin/env python3
"""End-to-end speed against llama.cpp and Hugging Face transformers on the same model file, the
same rendered prompts and the same label token ids, in one invocation. Prints one markdown table.

autolabel-local dumps every row's exact scoring request (`plan --dump-requests`); then
- autolabel-local labels the rows (`run --fresh`, release build), timed from its own summary;
- llama.cpp (PyPI `llama-cpp-python`, in a child process so its peak RSS is its own) does the same
  exact scoring, two ways: with its best levers (`llama.cpp-best`, through the C API: the previous
  row's KV cache kept and only the tokens after the common prefix evaluated, and all label
  continuations of a row in one llama_decode as parallel sequences sharing the prompt's cells in
  a unified KV cache), and the simple way (`llama.cpp`: reset per row, one prompt eval, then each
  label continuation evaluated token by token after rewinding the KV cache to the end of the
  prompt), so the effect of the levers is visible.
- transformers (PyPI `transformers` + `torch` + `gguf`, also in a child process) loads the same
  GGUF file (dequantized to float32, as `--dtype f32` does) and scores as well as it can be done
  with its API: one forward of the prompt with its KV cache, then all labels of the row in one
  batched forward (padded, attention-masked) over the cache repeated per label.
- transformers the Autolabel way (`transformers-generate`): greedy generation of up to 8 tokens
  after the prompt, the answer matched to a label (exact match after stripping whitespace and
  the end-of-turn token, else case-insensitive); an answer that matches no label counts as wrong
  and the share of such answers is printed.
The exact engines choose the label with the highest total log-prob; the table shows rows/s, the ratio to
autolabel-local, peak RSS, accuracy and agreement of the chosen labels.

Usage (a venv with llama-cpp-python, numpy, and for the transformers peer torch, transformers
and gguf; see scripts/llamacpp_reference.py and scripts/make_reference_models.py):
    /path/to/venv/bin/python benches/compare_peers.py [--model smollm2-135m-instruct] \
        [--rows movie_reviews=60,sms_spam=60,banking77=30] [--threads 2] \
        [--peers llama.cpp-best,llama.cpp,transformers] [--repeat 3] [--hf-python /other/venv/bin/python]
"""
import argparse, csv, json, os, re, resource, subprocess, sys, tempfile, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DATA = os.path.join(ROOT, "..", "shared", "data")
BIN = os.environ.get("BIN") or os.path.join(ROOT, "target", "release", "autolabel-local")
SETS = {
    "movie_reviews": ("examples/movie_reviews/config.json", "autolabel_movie_reviews/movie_reviews.csv"),
    "sms_spam": ("examples/sms_spam/config.json", "sms_spam/SMSSpamCollection.tsv"),
    "banking77": ("examples/banking77/config.json", "banking77/test.csv"),
}


def llama_worker(model, requests_file, out_file, threads):
    import llama_cpp
    import numpy as np

    reqs = [json.loads(l) for l in open(requests_file)]
    n_ctx = max(len(r["prompt_ids"]) + max(map(len, r["candidate_ids"])) for r in reqs) + 8
    llm = llama_cpp.Llama(model_path=model, n_ctx=n_ctx, n_batch=512, n_threads=threads,
                          logits_all=False, verbose=False)

    n_vocab = llm.n_vocab()

    def last_logits():
        # With logits_all off llama.cpp keeps only the last evaluated position's logits.
        return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))

    def logsoftmax(x):
        x = np.asarray(x, dtype=np.float64)
        m = x.max()
        return x - m - np.log(np.exp(x - m).sum())

    chosen = []
    start = time.perf_counter()
    for r in reqs:
        llm.reset()
        llm.eval(r["prompt_ids"])
        base = llm.n_tokens
        first = logsoftmax(last_logits())
        totals = []
        for cand in r["candidate_ids"]:
            llm.n_tokens = base  # rewind: the next eval drops the cache past the prompt
            total = first[cand[0]]
            for i in range(len(cand) - 1):
                llm.eval([cand[i]])
                total += logsoftmax(last_logits())[cand[i + 1]]
            totals.append(total)
        chosen.append(r["labels"][int(np.argmax(totals))])
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump({"labels": chosen, "seconds": seconds, "rss_mb": rss_mb}, open(out_file, "w"))


def llama_best_worker(model, requests_file, out_file, threads):
    """llama.cpp with its best levers for exact scoring, through its C API (llama-cpp-python's
    low-level bindings): the previous row's KV cache is kept and only the tokens after the
    longest common prefix with it are evaluated (prefix reuse across rows), and all label
    continuations of a row go through one llama_decode as parallel sequences, each a copy of the
    prompt's sequence in a unified KV cache (llama_memory_seq_cp shares the cells, nothing is
    recomputed)."""
    import ctypes
    import llama_cpp as L
    import numpy as np

    reqs = [json.loads(l) for l in open(requests_file)]
    n_labels = max(len(r["candidate_ids"]) for r in reqs)
    cont = max(sum(len(c) for c in r["candidate_ids"]) for r in reqs)
    n_ctx = max(len(r["prompt_ids"]) for r in reqs) + cont + 16
    quiet = L.llama_log_callback(lambda level, text, data: None)  # keep a reference
    L.llama_log_set(quiet, ctypes.c_void_p(0))
    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    lmodel = L.llama_model_load_from_file(model.encode(), mparams)
    cparams = L.llama_context_default_params()
    cparams.n_ctx = n_ctx
    cparams.n_batch = max(512, cont)
    cparams.n_ubatch = max(512, cont)
    cparams.n_seq_max = n_labels + 1
    cparams.n_threads = threads
    cparams.n_threads_batch = threads
    cparams.kv_unified = True
    ctx = L.llama_init_from_model(lmodel, cparams)
    mem = L.llama_get_memory(ctx)
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(lmodel))
    batch = L.llama_batch_init(max(n_ctx, cont), 0, n_labels + 1)

    def decode(tokens):
        """tokens: (token, pos, seq, wants_logits); returns the batch indices with logits."""
        for i, (t, pos, seq, logits) in enumerate(tokens):
            batch.token[i] = t
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if logits else 0
        batch.n_tokens = len(tokens)
        rc = L.llama_decode(ctx, batch)
        if rc != 0:
            sys.exit(f"llama_decode failed ({rc})")

    def logprobs_at(i):
        x = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).astype(np.float64)
        m = x.max()
        return x - m - np.log(np.exp(x - m).sum())

    chosen, prev = [], []
    start = time.perf_counter()
    for r in reqs:
        prompt = r["prompt_ids"]
        keep = 0
        while keep < min(len(prev), len(prompt)) and prev[keep] == prompt[keep]:
            keep += 1
        keep = min(keep, len(prompt) - 1)  # the last prompt token is evaluated for its logits
        L.llama_memory_seq_rm(mem, 0, keep, -1)
        for s in range(1, n_labels + 1):
            L.llama_memory_seq_rm(mem, s, -1, -1)
        todo = prompt[keep:]
        for b in range(0, len(todo), cparams.n_batch):
            chunk = todo[b:b + cparams.n_batch]
            decode([(t, keep + b + i, 0, b + i == len(todo) - 1) for i, t in enumerate(chunk)])
        first = logprobs_at(-1)  # the one output of the last chunk: the prompt's last token
        prev = list(prompt)
        totals = [first[c[0]] for c in r["candidate_ids"]]
        # Every label's tokens after the first, each label its own sequence sharing the prompt.
        tokens, owners = [], []
        for k, c in enumerate(r["candidate_ids"]):
            if len(c) > 1:
                L.llama_memory_seq_cp(mem, 0, k + 1, -1, -1)
            for i in range(len(c) - 1):
                tokens.append((c[i], len(prompt) + i, k + 1, True))
                owners.append((k, c[i + 1]))
        if tokens:
            decode(tokens)
            for i, (k, nxt) in enumerate(owners):
                totals[k] += logprobs_at(i)[nxt]
        chosen.append(r["labels"][int(np.argmax(totals))])
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    L.llama_batch_free(batch)
    json.dump({"labels": chosen, "seconds": seconds, "rss_mb": rss_mb}, open(out_file, "w"))


def load_transformers(model, threads):
    """The GGUF through transformers, dequantized to float32."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    return transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(model), gguf_file=os.path.basename(model), dtype=torch.float32
    ).eval()


def transformers_worker(model, requests_file, out_file, threads):
    import torch

    m = load_transformers(model, threads)
    reqs = [json.loads(l) for l in open(requests_file)]
    chosen = []
    start = time.perf_counter()
    with torch.inference_mode():
        for r in reqs:
            prompt = torch.tensor([r["prompt_ids"]])
            out = m(input_ids=prompt, use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].double(), -1)
            cands = r["candidate_ids"]
            totals = [first[c[0]].item() for c in cands]
            longest = max(map(len, cands))
            if longest > 1:
                n, p = len(cands), prompt.shape[1]
                inputs = torch.zeros((n, longest - 1), dtype=torch.long)
                mask = torch.zeros((n, p + longest - 1), dtype=torch.long)
                mask[:, :p] = 1
                for i, c in enumerate(cands):
                    inputs[i, : len(c) - 1] = torch.tensor(c[:-1])
                    mask[i, p : p + len(c) - 1] = 1
                cache = out.past_key_values
                cache.batch_repeat_interleave(n)
                logits = m(input_ids=inputs, past_key_values=cache, attention_mask=mask).logits
                lp = torch.log_softmax(logits.double(), -1)
                for i, c in enumerate(cands):
                    totals[i] += sum(lp[i, j, c[j + 1]].item() for j in range(len(c) - 1))
            chosen.append(r["labels"][max(range(len(totals)), key=totals.__getitem__)])
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump({"labels": chosen, "seconds": seconds, "rss_mb": rss_mb}, open(out_file, "w"))


def transformers_generate_worker(model, requests_file, out_file, threads):
    import torch
    import transformers

    m = load_transformers(model, threads)
    reqs = [json.loads(l) for l in open(requests_file)]
    tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(model), gguf_file=os.path.basename(model))
    stops = [t for t in (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")) if t is not None]
    chosen, outside = [], 0
    start = time.perf_counter()
    with torch.inference_mode():
        for r in reqs:
            out = m.generate(torch.tensor([r["prompt_ids"]]), max_new_tokens=8, do_sample=False,
                             eos_token_id=stops, pad_token_id=stops[0])
            text = tok.decode(out[0, len(r["prompt_ids"]):], skip_special_tokens=True).strip()
            label = next((l for l in r["labels"] if l == text), None) or next(
                (l for l in r["labels"] if l.lower() == text.lower()), None)
            if label is None:
                outside += 1
            chosen.append(label or f"<outside: {text}>")
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump({"labels": chosen, "seconds": seconds, "rss_mb": rss_mb, "outside": outside}, open(out_file, "w"))


def model_path(card):
    out = subprocess.run([BIN, "models"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith(card + " ") and "cached at " in line:
            return line.split("cached at ", 1)[1].split("  (default)")[0].strip()
    sys.exit(f"model card {card} is not cached; run `autolabel-local run --model {card} ...` once first")


def run_ours(config, data, rows, model, dtype, tmp):
    out = os.path.join(tmp, f"ours-{dtype}" + os.path.splitext(data)[1])
    cmd = ["/usr/bin/time", "-f", "RSS %M", BIN, "run", "--config", config, "--data", data,
           "--max-items", str(rows), "--sample-seed", "7", "--model", model, "--dtype", dtype,
           "--fresh", "--out", out]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode not in (0, 2):
        sys.exit(p.stderr)
    m = re.search(r"labeled (\d+)/(\d+) rows in ([0-9.]+) s", p.stderr)
    rss = int(re.search(r"RSS (\d+)", p.stderr).group(1)) / 1024
    tsv = out.endswith(".tsv")
    with open(out, newline="") as f:
        reader = csv.reader(f, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        header = next(reader)
        col = next(i for i, h in enumerate(header) if h.endswith("_task_label"))
        labels = [r[col] for r in reader]
    return {"labels": labels, "seconds": float(m.group(3)), "rss_mb": rss}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rows", default="movie_reviews=60,sms_spam=60,banking77=30")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dtypes", default="f32,q")
    ap.add_argument("--peers", default="llama.cpp-best,llama.cpp,transformers,transformers-generate")
    ap.add_argument("--hf-python", default=sys.executable, help="python with torch, transformers and gguf")
    ap.add_argument("--repeat", type=int, default=3, help="runs of every engine; rows/s and ratios are medians with their range")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        kind, rest = a.worker[0], a.worker[1:]
        workers = {"llama.cpp": llama_worker, "llama.cpp-best": llama_best_worker,
                   "transformers": transformers_worker,
                   "transformers-generate": transformers_generate_worker}
        return workers[kind](*rest, a.threads)
    if not os.environ.get("BIN"):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    model = model_path(a.model)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores, {cpu}; model {a.model} ({os.path.basename(model)})\n")
    print(f"rows/s and ratio: median of {a.repeat} runs (min-max); the ratio pairs each run with our f32 run of the same round\n")
    print("| dataset | rows | engine | rows/s | ratio to autolabel-local f32 | peak RSS MB | accuracy | agreement with autolabel-local f32 |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for item in a.rows.split(","):
            name, rows = item.split("=")
            config, data = SETS[name]
            config, data = os.path.join(ROOT, config), os.path.join(DATA, data)
            reqs = os.path.join(tmp, f"{name}.jsonl")
            subprocess.run([BIN, "plan", "--config", config, "--data", data, "--max-items", rows,
                            "--sample-seed", "7", "--model", model, "--sample", "1",
                            "--dump-requests", reqs], capture_output=True, check=True, cwd=ROOT)
            truth = [json.loads(l)["truth"] for l in open(reqs)]
            results = {}  # engine -> one result per repetition
            peers = {"llama.cpp": ("llama.cpp exact (reset per row, KV rewind per label)", sys.executable),
                     "llama.cpp-best": ("llama.cpp exact (prefix reuse across rows, labels as parallel sequences)", sys.executable),
                     "transformers": ("transformers f32 exact (prompt cache, labels batched)", a.hf_python),
                     "transformers-generate": ("transformers f32 generate + match (Autolabel way)", a.hf_python)}
            for rep in range(a.repeat):
                for dtype in a.dtypes.split(","):
                    results.setdefault(f"autolabel-local --dtype {dtype}", []).append(
                        run_ours(config, data, rows, model, dtype, tmp))
                for peer in a.peers.split(","):
                    label, python = peers[peer]
                    out = os.path.join(tmp, f"{name}-{peer}.json")
                    subprocess.run([python, __file__, "--threads", str(a.threads), "--worker", peer, model, reqs, out], check=True)
                    results.setdefault(label, []).append(json.load(open(out)))
            ref_name = "autolabel-local --dtype f32" if "autolabel-local --dtype f32" in results else next(iter(results))
            ref = results[ref_name]
            for engine, runs in results.items():
                r = runs[0]
                n = len(r["labels"])
                acc = sum(l == t for l, t in zip(r["labels"], truth)) / n
                agree = sum(l == t for l, t in zip(r["labels"], ref[0]["labels"])) / n
                rps = sorted(n / x["seconds"] for x in runs)
                # Ratio per repetition against our run of the same repetition.
                ratios = sorted((n / x["seconds"]) / (len(y["labels"]) / y["seconds"]) for x, y in zip(runs, ref))
                med = lambda v: v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
                spread = lambda v: f" ({v[0]:.2f}-{v[-1]:.2f})" if len(v) > 1 else ""
                note = f" ({r['outside'] / n:.0%} outside the label set)" if "outside" in r else ""
                rss = max(x["rss_mb"] for x in runs)
                print(f"| {name} | {n} | {engine} | {med(rps):.2f}{spread(rps)} | {med(ratios):.2f}{spread(ratios)} | {rss:.0f} | {acc:.3f}{note} | {agree:.3f} |", flush=True)


if __name__ == "__main__":
    main()
