"""Pieces the generation benchmarks share: the result file a peer's child process writes, and
Hugging Face transformers as a peer (greedy `generate` on the GGUF dequantized to float32, the
answer decoded as text for the caller to parse, Autolabel's local way)."""
import json, os, resource, time


def finish(spec, answers, seconds, tokens=0):
    """Writes a peer's answers, time, generated tokens and its own peak RSS to spec["out"]."""
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump({"answers": answers, "seconds": seconds, "tokens": tokens, "rss_mb": rss_mb}, open(spec["out"], "w"))


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
