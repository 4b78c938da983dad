"""Pieces the generation benchmarks share: the result file a peer's child process writes, and
Hugging Face transformers as a peer (greedy `generate` on the GGUF dequantized to float32, the
answer decoded as text for the caller to parse, Autolabel's local way)."""
import json, os, resource, time


def finish(spec, answers, seconds, tokens=0):
    """Writes a peer's answers, time, generated tokens and its own peak RSS to spec["out"]."""
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump({"answers": answers, "seconds": seconds, "tokens": tokens, "rss_mb": rss_mb}, open(spec["out"], "w"))


def llama_generate(spec, threads, grammars):
    """llama.cpp (llama-cpp-python) greedy generation of every request dumped by `plan
    --dump-requests`, each under its grammar from `grammars(llama_cpp, requests)` (a LlamaGrammar,
    or None: free text), built before the clock starts; llama-cpp-python reuses the common prefix
    across rows. Writes the answers (and generated tokens) with `finish`."""
    import llama_cpp

    reqs = [json.loads(l) for l in open(spec["requests"])]
    n_ctx = max(len(r["prompt_ids"]) + r["max_answer_tokens"] for r in reqs) + 8
    llm = llama_cpp.Llama(model_path=spec["model"], n_ctx=n_ctx, n_batch=512, n_threads=threads, verbose=False)
    gs = grammars(llama_cpp, reqs)
    answers, tokens = [], 0
    start = time.perf_counter()
    for r, g in zip(reqs, gs):
        out = llm.create_completion(prompt=r["prompt_ids"], max_tokens=r["max_answer_tokens"], temperature=0.0,
                                    grammar=g, stop=["<|im_end|>", "<|endoftext|>"])
        answers.append(out["choices"][0]["text"])
        tokens += out["usage"]["completion_tokens"]
    finish(spec, answers, time.perf_counter() - start, tokens)


def transformers_worker(spec, threads):
    """transformers greedy generate on every request of spec["requests"] (prompt ids, token
    budget, end ids), with the same budget; writes the decoded answers through `finish`."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    model = spec["model"]
    m = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(model), gguf_file=os.path.basename(model), dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(model), gguf_file=os.path.basename(model))
    reqs = [json.loads(l) for l in open(spec["requests"])]
    answers, tokens = [], 0
    start = time.perf_counter()
    with torch.inference_mode():
        for r in reqs:
            stops = list(r["end_ids"])
            out = m.generate(torch.tensor([r["prompt_ids"]]), max_new_tokens=r["max_answer_tokens"], do_sample=False,
                             eos_token_id=stops, pad_token_id=stops[0])
            new = out[0, len(r["prompt_ids"]):]
            tokens += len(new)
            answers.append(tok.decode(new, skip_special_tokens=True))
    finish(spec, answers, time.perf_counter() - start, tokens)


def run_peers(script, peers, spec, names, show, tmp, threads, hf_python):
    """Runs each peer of `peers` (a comma-separated list) as `script --worker PEER SPEC` in a child
    process (transformers under `hf_python`, the others under this Python), so its peak RSS is
    its own, and shows its result with `show(name, result)`, or a table row saying why it failed."""
    import subprocess, sys

    for peer in [p for p in peers.split(",") if p]:
        if peer not in names:
            print(f"| {peer} | not a peer of this benchmark (peers: {', '.join(names)}) |", flush=True)
            continue
        peer_spec = dict(spec, out=os.path.join(tmp, f"{peer}.json"))
        spec_file = os.path.join(tmp, f"{peer}.spec.json")
        json.dump(peer_spec, open(spec_file, "w"))
        python = hf_python if peer == "transformers" else sys.executable
        p = subprocess.run([python, script, "--threads", str(threads), "--worker", peer, spec_file],
                           capture_output=True, text=True)
        if p.returncode != 0:
            why = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode
            print(f"| {names[peer]} | failed: {why} |", flush=True)
            continue
        show(names[peer], json.load(open(peer_spec["out"])))
