#!/usr/bin/env python3
"""Peak RSS of `--dtype q` against the model file as rows grow, for the built-in models.

For each model, batch size and row length it writes rows of about that many tokens (movie
reviews joined or cut), reads the prompt token counts from `plan`, runs `run --dtype q` and
takes the process's peak RSS. It prints, per run, the KV cache the context needs (the shared
prefix once, plus each row of the batch: f16 keys and values of every layer, the `q` cache on a CPU) and what is left
of the peak beside it, as a multiple of the model file.

    python3 benches/memory_rows.py [--models smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct]
                                   [--lengths 30,250,500,1000] [--batches 1,8]
"""
import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "autolabel-local"
REVIEWS = ROOT.parent / "shared" / "data" / "autolabel_movie_reviews" / "movie_reviews.csv"
CONFIG = ROOT / "examples" / "movie_reviews" / "config.json"
# (layers, KV heads, head dim) of the built-in cards: f16 K and V per token per layer.
DIMS = {
    "smollm2-135m-instruct": (30, 3, 64),
    "qwen2.5-coder-0.5b-instruct": (24, 2, 64),
}


def kv_per_token(model):
    layers, kvh, hd = DIMS[model]
    return 2 * layers * kvh * hd * 2


def model_file(model):
    d = Path(os.environ.get("AUTOLABEL_LOCAL_CACHE", Path.home() / ".cache" / "autolabel-local"))
    files = sorted((d / "models" / model).glob("*.gguf"))
    if not files:
        sys.exit(f"{model}: no .gguf under {d / 'models' / model}; run it once to fetch it")
    return files[0]


def rows_of(words, n_rows):
    """`n_rows` texts of about `words` words from the movie reviews (joined, then cut)."""
    with open(REVIEWS, newline="") as f:
        reader = csv.DictReader(f)
        pool = [r for r in reader]
    text_key = next(k for k in pool[0] if k.lower() in ("example", "text", "review"))
    label_key = next(k for k in pool[0] if k.lower() == "label")
    out, i = [], 0
    for _ in range(n_rows):
        ws, label = [], pool[i % len(pool)][label_key]
        while len(ws) < words:
            ws += pool[i % len(pool)][text_key].split()
            i += 1
        out.append({text_key: " ".join(ws[:words]), label_key: label})
    return text_key, label_key, out


def peak_rss(cmd):
    """Exit status, output and peak RSS (bytes) of `cmd`."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    return status, out, usage.ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(DIMS))
    ap.add_argument("--lengths", default="30,250,500,1000", help="words per row")
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args()
    if not BIN.exists():
        sys.exit(f"{BIN} is missing: cargo build --release")
    mb = 1 << 20
    print("| model | --batch-size | rows in a batch x prompt tokens (max) | shared prefix | peak RSS MB | KV of the context MB | peak - KV | (peak - KV) / file |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            file_bytes = model_file(model).stat().st_size
            for batch in [int(b) for b in args.batches.split(",")]:
                for words in [int(w) for w in args.lengths.split(",")]:
                    text_key, label_key, rows = rows_of(words, max(batch, 4))
                    data = Path(tmp) / f"rows-{words}-{batch}.csv"
                    with open(data, "w", newline="") as f:
                        w = csv.DictWriter(f, fieldnames=[text_key, label_key])
                        w.writeheader()
                        w.writerows(rows)
                    common = ["--model", model, "--config", str(CONFIG), "--data", str(data)]
                    _, plan, _ = peak_rss([str(BIN), "plan", *common])
                    tokens = int(re.search(r"prompt tokens: mean [0-9.]+, max (\d+)", plan).group(1))
                    m = re.search(r"shared prompt prefix: (\d+) tokens", plan)
                    prefix = int(m.group(1)) if m else 0
                    status, out, rss = peak_rss([
                        str(BIN), "run", *common, "--dtype", "q", "--batch-size", str(batch),
                        "--fresh", "--out", str(Path(tmp) / "out.csv"),
                    ])
                    if status != 0:
                        sys.exit(f"run failed:\n{out}")
                    # The prefix once, then each row of a batch: its own tokens (padded to the
                    # longest; its two label tokens not counted). On a CPU a batch holds at most
                    # 512 tokens of work (one row when a row is longer).
                    own = tokens - prefix
                    in_batch = min(batch, max(1, 512 // (own + 2)))
                    kv = kv_per_token(model) * (prefix + in_batch * own)
                    rest = rss - kv
                    print(f"| {model} | {batch} | {in_batch} x {tokens} | {prefix} | {rss / mb:.1f} | "
                          f"{kv / mb:.1f} | {rest / mb:.1f} | {rest / file_bytes:.2f}x |", flush=True)
            print(f"\n{model}: file {file_bytes / mb:.1f} MB, KV cache {kv_per_token(model) / 1024:.1f} KiB per token (f16)\n")


if __name__ == "__main__":
    main()
