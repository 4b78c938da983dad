#!/usr/bin/env python3
"""The GPU check: runs the CUDA build of autolabel-local on real model shapes and compares its
label log-probabilities with transformers' on the same GPU. Meant for a machine with a GPU,
torch and transformers but no Rust toolchain and no network (scripts/gpu_check.sh runs it with
the binary scripts/gpu_bundle.sh builds); runs the same way on the CPU (--device cpu) to check
the script itself.

For each model shape (real configs, random weights with a fixed seed, the tokenizer of the
matching tiny test model, whose ids all fit the real vocabularies):
  1. transformers saves the checkpoint (safetensors, float32);
  2. `autolabel-local plan --dump-requests` writes every row's prompt and label token ids;
  3. transformers computes every label's log-probability from those ids (float32, and bf16);
  4. `autolabel-local run` labels the rows on the device in f32 (batch 8 and batch 1) and bf16;
  5. the label log-probabilities are compared: f32 within F32_TOL of transformers f32, bf16
     within BF16_TOL of transformers f32 or no further from it than 1.5x transformers' own bf16
     (normalised over the label set, which is what decides the label), batch 8 within F32_TOL
     of batch 1; ours against transformers' bf16 is reported too.
  6. (--bench-shapes) rows/s labeling SMS, banking77 and movie-review rows in f32 and bf16 at
     batch 1, 16 and 64 and in q (Q8_0 quantized at load), next to transformers scoring the same
     label token ids on the same device (in bf16 for the q rows).
  7. the constrained decoder: `run` extracts attributes of product titles
     (examples/product_attributes: one of eight categories, a subset of four tags, an integer
     under a JSON schema, all generated under one grammar) on the device, then `score`
     teacher-forces those answers on the device and on the CPU: every attribute's confidence
     (the geometric mean of its value's token probabilities) must agree within GEN_TOL in log
     space. How far the forced confidences are from the generated ones is reported for
     information (a forced answer may be split into other tokens than the generated one).
Writes results.json and results.md into --out and exits 1 if any comparison fails.
"""
import argparse, csv, json, math, os, re, shutil, subprocess, sys, time

import torch
import transformers

F32_TOL = 1e-3
BF16_TOL = 5e-2
GEN_TOL = 1e-3
GEN_ROWS = 12
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIXTURES = os.path.join(ROOT, "models", "tests", "fixtures", "hf")

# name: (transformers config class, its arguments, the tiny model whose tokenizer is used)
SHAPES = {
    "qwen2.5-0.5b": ("Qwen2Config", dict(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
        rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True), "tiny-qwen2"),
    "llama-1.2b": ("LlamaConfig", dict(  # Llama-3.2-1B's dimensions (without its rope scaling)
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
        rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True), "tiny-llama"),
    "llama-7b": ("LlamaConfig", dict(  # Llama-2-7B's dimensions
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False), "tiny-llama"),
    "flan-t5-large": ("T5Config", dict(
        vocab_size=32128, d_model=1024, d_ff=2816, d_kv=64, num_layers=24, num_heads=16,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
        eos_token_id=1, pad_token_id=0), "tiny-flan-t5"),
    # Small versions of the same families, to check this script on a CPU.
    "tiny-qwen": ("Qwen2Config", dict(
        vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0,
        tie_word_embeddings=True), "tiny-qwen2"),
    "tiny-t5": ("T5Config", dict(
        vocab_size=1000, d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
        eos_token_id=1, pad_token_id=0), "tiny-flan-t5"),
}


def make_checkpoint(name, folder, device):
    cls, args, tiny = SHAPES[name]
    torch.manual_seed(0)
    config = getattr(transformers, cls)(**args)
    with torch.device(device):
        if cls == "T5Config":
            model = transformers.T5ForConditionalGeneration(config)
        else:
            model = transformers.AutoModelForCausalLM.from_config(config)
    model = model.float().eval()
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]:
        src = os.path.join(FIXTURES, tiny, f)
        if os.path.exists(src) and not (f == "generation_config.json" and os.path.exists(os.path.join(folder, f))):
            shutil.copy(src, folder)
    return model, cls == "T5Config"


@torch.no_grad()
def reference(model, t5, requests, device):
    """Every label's log P(label tokens | prompt) from transformers, float32."""
    out = []
    for r in requests:
        prompt = torch.tensor([r["prompt_ids"]], device=device)
        row = []
        for cand in r["candidate_ids"]:
            c = torch.tensor([cand], device=device)
            if t5:
                start = torch.tensor([[model.config.decoder_start_token_id]], device=device)
                dec = torch.cat([start, c[:, :-1]], dim=1)
                logits = model(input_ids=prompt, decoder_input_ids=dec).logits[0]
                lp = torch.log_softmax(logits.double(), -1)
                row.append(float(lp[torch.arange(len(cand)), c[0]].sum()))
            else:
                ids = torch.cat([prompt, c], dim=1)
                logits = model(input_ids=ids).logits[0]
                lp = torch.log_softmax(logits.double(), -1)
                n = prompt.shape[1]
                pos = torch.arange(n - 1, n - 1 + len(cand), device=device)
                row.append(float(lp[pos, c[0]].sum()))
        out.append(row)
    return out


def normalised(row):
    m = max(row)
    z = m + torch.log(torch.tensor([v - m for v in row], dtype=torch.float64).exp().sum()).item()
    return [v - z for v in row]


def ours(out_csv, labels):
    with open(out_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    task = next(k for k in rows[0] if k.endswith("_task_label_logprobs"))
    return [[json.loads(r[task])[l] for l in labels] for r in rows]


def max_diff(a, b, norm=False):
    worst = 0.0
    for x, y in zip(a, b):
        if norm:
            x, y = normalised(x), normalised(y)
        worst = max(worst, max(abs(p - q) for p, q in zip(x, y)))
    return worst


def constrained(bin_, folder, device, work, name, log):
    """Generated on the device, teacher-forced on the device and on the CPU: the largest
    difference of the log of any attribute confidence between the two, the largest between the
    forced and the generated confidences, and how many rows were generated."""
    example = os.path.join(ROOT, "examples", "product_attributes")
    c = json.load(open(os.path.join(example, "config.json")))
    c["prompt"]["attributes"] = [
        next(x for x in c["prompt"]["attributes"] if x["name"] == "category"),
        {"name": "tags", "description": "Tags.", "options": ["wireless", "black", "usb", "color"],
         "task_type": "multilabel_classification"},
        {"name": "pack", "description": "How many items.", "schema": {"type": "integer", "minimum": 0, "maximum": 99}},
    ]
    config = os.path.join(work, "attributes.json")
    json.dump(c, open(config, "w"))
    common = ["--config", config, "--model", folder, "--dtype", "f32", "--max-items", str(GEN_ROWS)]
    gen = os.path.join(work, f"{name}.attributes.csv")
    run([bin_, "run", *common, "--data", os.path.join(example, "test.csv"), "--device", device,
         "--batch-size", "8", "--out", gen, "--fresh"], log)
    scored = {}
    for where in (device, "cpu"):
        scored[where] = os.path.join(work, f"{name}.attributes.scored-{where}.csv")
        run([bin_, "score", *common, "--data", gen, "--device", where, "--label-column",
             "ProductAttributes_task_label", "--out", scored[where]], log)
    rows = {}
    for where, path in scored.items():
        with open(path, newline="", encoding="utf-8") as f:
            rows[where] = list(csv.DictReader(f))
    worst, vs_run, n = 0.0, 0.0, 0
    lg = lambda v: math.log(max(float(v), 1e-30))
    for d, c in zip(rows[device], rows["cpu"]):
        if d["ProductAttributes_task_successfully_labeled"] != "True":
            continue
        n += 1
        for a in ("category", "tags", "pack"):
            given = f"ProductAttributes_task_given_{a}_confidence"
            worst = max(worst, abs(lg(d[given]) - lg(c[given])))
            vs_run = max(vs_run, abs(lg(d[given]) - lg(d[f"{a}_confidence"])))
    if n == 0:
        worst = float("inf")
    return worst, vs_run, n


# The benchmark's data: name -> (config in the checkout or None for the SMS config above, CSV,
# rows). banking77.csv comes with the bundle; movie reviews are in examples/.
BENCH_SETS = {
    "sms_spam": (None, "sms.csv", 64),
    "banking77": ("examples/banking77/config.json", "banking77.csv", 32),
    "movie_reviews": ("examples/movie_reviews/config.json", "movie_reviews.csv", 16),
}
BENCH_DTYPES = ["f32", "bf16", "q"]  # q: Q8_0 quantized at load; transformers runs bf16 there
BENCH_BATCHES = [1, 16, 64]
HF_TOKENS = 32768  # most tokens per transformers forward


@torch.no_grad()
def hf_rows_per_s(model, requests, batch, device):
    """transformers scoring every label of `batch` rows per step: each (row, label) sequence
    right-padded, one forward of the base model over up to HF_TOKENS tokens, the LM head only at
    the label positions (not the whole [tokens, vocab] logits), log-softmax, gather."""
    dev = torch.device(device)
    def step(chunk):
        seqs = [(r["prompt_ids"] + c, len(r["prompt_ids"]), c) for r in chunk for c in r["candidate_ids"]]
        longest = max(len(s) for s, _, _ in seqs)
        per = max(1, HF_TOKENS // longest)
        for j in range(0, len(seqs), per):
            sub = seqs[j:j + per]
            width = max(len(s) for s, _, _ in sub)
            ids = torch.zeros((len(sub), width), dtype=torch.long)
            mask = torch.zeros((len(sub), width), dtype=torch.long)
            rows, pos, tok = [], [], []
            for k, (s, n, c) in enumerate(sub):
                ids[k, :len(s)] = torch.tensor(s)
                mask[k, :len(s)] = 1
                rows += [k] * len(c)
                pos += list(range(n - 1, n - 1 + len(c)))
                tok += c
            hidden = model.model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
            h = hidden[torch.tensor(rows, device=dev), torch.tensor(pos, device=dev)]
            lp = torch.log_softmax(model.lm_head(h).float(), -1)
            lp[torch.arange(len(tok), device=dev), torch.tensor(tok, device=dev)].cpu()
    step(requests[:1])  # warm-up (kernels, cuBLAS handles)
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.time()
    for i in range(0, len(requests), batch):
        step(requests[i:i + batch])
    if device == "cuda":
        torch.cuda.synchronize()
    return len(requests) / (time.time() - t)


def bench(a, name, folder, model, sms_config, torch_device, log):
    """rows/s of ours (the tool's own figure: labeling only, model load excluded) and of
    transformers on the same rows, per data set, dtype and batch size."""
    out = []
    for data_name, (cfg, csv_name, rows) in BENCH_SETS.items():
        rows = a.bench_rows.get(data_name, rows)
        config = os.path.join(ROOT, cfg) if cfg else sms_config
        data = os.path.join(a.bench_data, csv_name)
        if not os.path.exists(data):
            data = os.path.join(ROOT, "examples", data_name, csv_name)
        common = ["--config", config, "--data", data, "--model", folder, "--device", a.device,
                  "--max-items", str(rows)]
        req = os.path.join(a.work, f"{name}.{data_name}.requests.jsonl")
        run([a.bin, "plan", *common, "--dtype", "f32", "--dump-requests", req], log)
        requests = [json.loads(l) for l in open(req)]
        for dtype in BENCH_DTYPES:
            m = model.to(torch.float32 if dtype == "f32" else torch.bfloat16)
            for batch in BENCH_BATCHES:
                o = os.path.join(a.work, f"{name}.{data_name}.{dtype}.{batch}.csv")
                _, err = run([a.bin, "run", *common, "--dtype", dtype, "--batch-size", str(batch),
                              "--out", o, "--fresh"], log)
                got = re.search(r"labeled \d+/\d+ rows in [\d.]+ s \(([\d.]+) rows/s\)", err)
                ours_rps = float(got.group(1)) if got else float("nan")
                hf = hf_rows_per_s(m, requests, batch, torch_device)
                r = {"shape": name, "data": data_name, "rows": len(requests), "labels": len(requests[0]["labels"]),
                     "dtype": dtype, "batch": batch, "ours_rows_per_s": ours_rps,
                     "transformers_rows_per_s": round(hf, 2), "ratio": round(ours_rps / hf, 2)}
                print(f"bench {name} {data_name} {dtype} batch {batch}: ours {ours_rps:.2f} rows/s, transformers {hf:.2f} rows/s ({r['ratio']}x)", flush=True)
                out.append(r)
    return out


def run(cmd, log):
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    log.write("$ " + " ".join(cmd) + "\n" + p.stdout + p.stderr + "\n")
    if p.returncode not in (0, 2):
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return time.time() - t, p.stderr


def write_results(a, results, benchmarks, torch_device):
    """results.json and results.md so far (written after every shape, so a run cut short keeps them)."""
    json.dump({"checks": results, "bench": benchmarks}, open(os.path.join(a.out, "results.json"), "w"), indent=1)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(f"GPU check on {a.device} ({torch.cuda.get_device_name() if torch_device == 'cuda' else 'CPU'})\n\n")
        f.write("| shape | rows | check | max difference | tolerance | ok | run s (f32 / batch 1 / bf16 / constrained) |\n|---|---:|---|---:|---:|---|---|\n")
        for r in results:
            s = r["run_seconds"]
            for k, c in r["checks"].items():
                f.write(f"| {r['shape']} | {r['rows']} | {k} | {c['max_diff']:.2e} | {c['tolerance']:g} | {c['ok']} | {s['f32']} / {s['f32-batch1']} / {s['bf16']} / {s.get('constrained', '-')} |\n")
        if benchmarks:
            f.write("\nrows/s labeling (model load excluded); transformers scores every label of a batch's rows in one forward (LM head at the label positions only), in bf16 where ours is q\n\n")
            f.write("| shape | data | rows | labels | dtype | batch | ours rows/s | transformers rows/s | ours / transformers |\n|---|---|---:|---:|---|---:|---:|---:|---:|\n")
            for b in benchmarks:
                f.write(f"| {b['shape']} | {b['data']} | {b['rows']} | {b['labels']} | {b['dtype']} | {b['batch']} | {b['ours_rows_per_s']:.2f} | {b['transformers_rows_per_s']:.2f} | {b['ratio']:.2f} |\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True, help="CSV with columns Label, SMS")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shapes", default="qwen2.5-0.5b,llama-1.2b,flan-t5-large")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/autolabel-gpu-check")
    ap.add_argument("--bench-shapes", default="qwen2.5-0.5b",
                    help="decoder shapes to benchmark against transformers (empty: none)")
    ap.add_argument("--bench-data", default=os.path.join(ROOT, "target", "gpu-bundle"),
                    help="folder with sms.csv and banking77.csv (from scripts/gpu_bundle.sh)")
    ap.add_argument("--bench-rows", default="",
                    help="rows per data set, e.g. sms_spam=8,banking77=4 (default: 64, 32, 16)")
    a = ap.parse_args()
    a.bench_rows = {k: int(v) for k, v in (x.split("=") for x in a.bench_rows.split(",") if x)}
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.work, exist_ok=True)
    log = open(os.path.join(a.out, "log.txt"), "w")
    config = os.path.join(a.work, "sms.json")
    json.dump({
        "task_name": "Spam", "task_type": "classification",
        "dataset": {"label_column": "Label", "delimiter": ","},
        "prompt": {"task_guidelines": "Classify the SMS message as one of:\n{labels}",
                   "labels": ["ham", "spam"], "example_template": "Message: {SMS}\nLabel: {Label}"}},
        open(config, "w"))
    torch_device = "cuda" if a.device == "cuda" else "cpu"
    results, failed, benchmarks = [], [], []
    for name in a.shapes.split(","):
        folder = os.path.join(a.work, name)
        t = time.time()
        model, t5 = make_checkpoint(name, folder, torch_device)
        made = time.time() - t
        common = ["--config", config, "--data", a.data, "--model", folder, "--device", a.device,
                  "--max-items", str(a.rows)]
        req = os.path.join(a.work, f"{name}.requests.jsonl")
        run([a.bin, "plan", *common, "--dtype", "f32", "--dump-requests", req], log)
        requests = [json.loads(l) for l in open(req)]
        labels = requests[0]["labels"]
        t = time.time()
        ref = reference(model, t5, requests, torch_device)
        ref_seconds = time.time() - t
        # bf16 weights and activations in transformers too (what our bf16 run is compared with).
        ref_bf16 = reference(model.to(torch.bfloat16), t5, requests, torch_device)
        if name in a.bench_shapes.split(",") and not t5:
            benchmarks.extend(bench(a, name, folder, model, config, torch_device, log))
        del model
        if torch_device == "cuda":
            torch.cuda.empty_cache()
        outs, seconds = {}, {}
        for variant, flags in [("f32", ["--dtype", "f32", "--batch-size", "8"]),
                               ("f32-batch1", ["--dtype", "f32", "--batch-size", "1"]),
                               ("bf16", ["--dtype", "bf16", "--batch-size", "8"])]:
            out = os.path.join(a.work, f"{name}.{variant}.csv")
            seconds[variant], _ = run([a.bin, "run", *common, *flags, "--out", out, "--fresh"], log)
            outs[variant] = ours(out, labels)
        checks = {
            "f32 vs transformers": (max_diff(outs["f32"], ref), F32_TOL),
            "f32 vs transformers (normalised)": (max_diff(outs["f32"], ref, True), F32_TOL),
            # bf16 may be ill-conditioned for a shape (transformers' own bf16 can be far from
            # f32): ours must be within BF16_TOL of f32, or no further than 1.5x transformers'.
            "bf16 vs transformers f32 (normalised)": (
                max_diff(outs["bf16"], ref, True),
                max(BF16_TOL, 1.5 * max_diff(ref_bf16, ref, True))),
            "batch 8 vs batch 1 (f32)": (max_diff(outs["f32"], outs["f32-batch1"]), F32_TOL),
        }
        if not t5:  # T5's vocabulary has no "{": it cannot write the JSON answer
            t = time.time()
            gen_diff, vs_run, gen_rows = constrained(a.bin, folder, a.device, a.work, name, log)
            seconds["constrained"] = time.time() - t
            checks[f"constrained answers teacher-forced on {a.device} vs cpu ({gen_rows} rows, log confidence)"] = (
                gen_diff, GEN_TOL)
        info = {"bf16 vs transformers bf16 (normalised)": max_diff(outs["bf16"], ref_bf16, True),
                **({} if t5 else {"teacher-forced vs generated attribute confidence (log)": vs_run}),
                "transformers bf16 vs f32 (normalised)": max_diff(ref_bf16, ref, True)}
        r = {"shape": name, "info": info, "rows": len(requests), "checkpoint_seconds": round(made, 1),
             "transformers_seconds": round(ref_seconds, 1),
             "run_seconds": {k: round(v, 1) for k, v in seconds.items()},
             "checks": {k: {"max_diff": d, "tolerance": tol, "ok": d <= tol} for k, (d, tol) in checks.items()}}
        results.append(r)
        for k, d in info.items():
            print(f"{name}: {k}: max difference {d:.2e} (for information)", flush=True)
        for k, c in r["checks"].items():
            print(f"{name}: {k}: max difference {c['max_diff']:.2e} (tolerance {c['tolerance']:.3g}) {'ok' if c['ok'] else 'FAILED'}", flush=True)
            if not c["ok"]:
                failed.append(f"{name}: {k}")
        shutil.rmtree(folder, ignore_errors=True)
        write_results(a, results, benchmarks, torch_device)
    if failed:
        sys.exit("failed: " + "; ".join(failed))
    print("gpu check passed")


if __name__ == "__main__":
    main()
