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


def llama_generate_batched(spec, threads, grammar_texts, batch):
    """llama.cpp with its batch API (llama-cpp-python's low-level bindings): `batch` rows decode
    together as parallel sequences, one token each per `llama_decode`, each under its own GBNF
    grammar sampler followed by greedy choice. The prompts' common prefix is decoded once into
    sequence 0 and copied to the others (`llama_memory_seq_cp`, a unified KV cache), each group
    of rows prefills its own tails in one decode. Grammars are parsed and samplers built before
    the clock starts. Writes the answers (and generated tokens) with `finish`."""
    import ctypes
    import llama_cpp as L

    reqs = [json.loads(l) for l in open(spec["requests"])]
    prompts = [r["prompt_ids"] for r in reqs]
    common = 0
    while all(len(p) > common + 1 and p[common] == prompts[0][common] for p in prompts):
        common += 1
    tails = max(len(p) - common for p in prompts)
    per_row = tails + max(r["max_answer_tokens"] for r in reqs) + 8
    L.llama_backend_init()
    model = L.llama_model_load_from_file(spec["model"].encode(), L.llama_model_default_params())
    vocab = L.llama_model_get_vocab(model)
    cp = L.llama_context_default_params()
    cp.n_ctx = common + batch * per_row + 64
    cp.n_batch = max(512, batch * tails + 8)
    cp.n_ubatch = 512
    cp.n_seq_max = batch
    cp.n_threads = cp.n_threads_batch = threads
    cp.kv_unified = True
    ctx = L.llama_init_from_model(model, cp)
    mem = L.llama_get_memory(ctx)
    samplers = []
    for g in grammar_texts(reqs):
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_grammar(vocab, g.encode(), b"root"))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        samplers.append(chain)
    lb = L.llama_batch_init(cp.n_batch, 0, 1)

    def decode(items):
        """items: (token, position, sequence, wants logits); returns each wanted item's index."""
        lb.n_tokens = len(items)
        out = {}
        for i, (tok, pos, seq, logits) in enumerate(items):
            lb.token[i], lb.pos[i], lb.n_seq_id[i] = tok, pos, 1
            lb.seq_id[i][0] = seq
            lb.logits[i] = logits
            if logits:
                out[seq] = i
        rc = L.llama_decode(ctx, lb)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        return out

    piece = ctypes.create_string_buffer(256)
    answers, tokens = [""] * len(reqs), 0
    start = time.perf_counter()
    for at in range(0, common, cp.n_batch):
        decode([(t, at + i, 0, False) for i, t in enumerate(prompts[0][at:min(common, at + cp.n_batch)])])
    for g0 in range(0, len(reqs), batch):
        group = list(range(g0, min(len(reqs), g0 + batch)))
        for s in range(len(group)):
            L.llama_memory_seq_rm(mem, s, common, -1)
            if s:
                L.llama_memory_seq_cp(mem, 0, s, 0, common)
        items = []
        for s, r in enumerate(group):
            tail = prompts[r][common:]
            items += [(t, common + i, s, i == len(tail) - 1) for i, t in enumerate(tail)]
        where = decode(items)
        pos = {s: len(prompts[r]) for s, r in enumerate(group)}
        text = {s: b"" for s in range(len(group))}
        left = {s: reqs[r]["max_answer_tokens"] for s, r in enumerate(group)}
        while where:
            step = []
            for s, idx in where.items():
                r = group[s]
                tok = L.llama_sampler_sample(samplers[r], ctx, idx)
                if L.llama_vocab_is_eog(vocab, tok):
                    continue
                n = L.llama_token_to_piece(vocab, tok, piece, len(piece), 0, False)
                text[s] += piece.raw[:n]
                tokens += 1
                left[s] -= 1
                if left[s] > 0:
                    step.append((tok, pos[s], s, True))
                    pos[s] += 1
            where = decode(step) if step else {}
        for s, r in enumerate(group):
            answers[r] = text[s].decode("utf-8", errors="replace")
    seconds = time.perf_counter() - start
    L.llama_batch_free(lb)
    finish(spec, answers, seconds, tokens)
