#!/usr/bin/env python3
"""Would pruning the label trie pay off? A measurement, not a feature.

Exact scoring feeds every label-trie node that has children through the model (banking77 with
SmolLM2: 382 of 459 nodes per row). Token log-probs are <= 0, so a best-first search over the trie
could stop early: once every unexpanded prefix is less likely than the best complete label, the
argmax is exact; once the unexpanded prefixes' total probability is at most eps of the complete
labels' total, every label's normalised probability is within eps. This script labels rows with
autolabel-local (full trie: the journal keeps every token log-prob of every label), then replays
that search on the stored log-probs and prints how many nodes it would have fed, and in how many
sequential model calls, for several eps and nodes-per-call K.

    python3 benches/trie_pruning.py [--rows 40] [--seed 7]        (banking77, default model)
"""
import argparse, json, math, os, sqlite3, struct, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "autolabel-local")


def journal_logprobs(path):
    rows = []
    con = sqlite3.connect(path)
    for (blob,) in con.execute("SELECT logprobs FROM scores"):
        (n,) = struct.unpack_from("<I", blob, 0)
        off, labels = 4, []
        for _ in range(n):
            (m,) = struct.unpack_from("<I", blob, off)
            off += 4
            labels.append(list(struct.unpack_from(f"<{m}f", blob, off)))
            off += 4 * m
        rows.append(labels)
    return rows


def build_trie(candidates):
    index, parent, paths = {}, [], []
    for cand in candidates:
        p, path = None, []
        for tok in cand:
            key = (p, tok)
            if key not in index:
                index[key] = len(parent)
                parent.append(p)
            p = index[key]
            path.append(p)
        paths.append(path)
    children = [[] for _ in parent]
    for node, p in enumerate(parent):
        if p is not None:
            children[p].append(node)
    return parent, children, paths


def replay(trie, token_lps, eps, k):
    """Nodes fed and model calls of a best-first search that expands up to k nodes per call."""
    parent, children, paths = trie
    prefix = [0.0] * len(parent)
    for path, lps in zip(paths, token_lps):
        total = 0.0
        for node, lp in zip(path, lps):
            total += lp
            prefix[node] = total
    frontier = {n for n, p in enumerate(parent) if p is None}
    fed = calls = 0
    while True:
        done = [prefix[n] for n in frontier if not children[n]]
        open_ = sorted((n for n in frontier if children[n]), key=lambda n: -prefix[n])
        if not open_:
            break
        best = max(done, default=-math.inf)
        unexplored = sum(math.exp(prefix[n]) for n in open_)
        explored = sum(math.exp(v) for v in done)
        if prefix[open_[0]] < best and unexplored <= eps * explored:
            break
        calls += 1
        for n in open_[:k]:
            fed += 1
            frontier.remove(n)
            frontier.update(children[n])
    return fed, calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=os.path.join(ROOT, "examples/banking77/config.json"))
    ap.add_argument("--data", default=os.path.join(ROOT, "../shared/data/banking77/test.csv"))
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--config", args.config, "--data", args.data, "--max-items", str(args.rows),
                  "--sample-seed", str(args.seed)]
        reqs = os.path.join(tmp, "requests.jsonl")
        subprocess.run([BIN, "plan", *common, "--dump-requests", reqs], check=True,
                       capture_output=True)
        out = os.path.join(tmp, "out.csv")
        subprocess.run([BIN, "run", *common, "--out", out], check=True, capture_output=True)
        first = json.loads(open(reqs).readline())
        rows = journal_logprobs(out + ".journal")
    trie = build_trie(first["candidate_ids"])
    parent, children, _ = trie
    inner = sum(1 for c in children if c)
    print(f"{len(first['labels'])} labels, {len(parent)} trie nodes, {inner} with children "
          f"(what exact scoring feeds per row); {len(rows)} rows\n")
    print("| stop when | nodes per call | nodes fed per row (mean / max) | model calls per row (mean) |")
    print("|---|---:|---:|---:|")
    for eps, name in [(math.inf, "argmax exact"), (0.1, "probabilities within 10%"),
                      (0.01, "probabilities within 1%")]:
        for k in (1, 8, 32):
            res = [replay(trie, r, eps, k) for r in rows]
            fed = [f for f, _ in res]
            calls = sum(c for _, c in res) / len(res)
            print(f"| {name} | {k} | {sum(fed) / len(fed):.0f} / {max(fed)} | {calls:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
