"""Reference results of the nervaluate package (pip install nervaluate==1.2.1) on random
documents, for src/tasks/ner_eval.rs's test. Writes tests/fixtures/nervaluate_reference.json.

Spans overlap, nest, repeat and carry labels outside the tag list, so every branch of the four
schemes (strict, exact, partial, ent_type) is exercised."""
import json
import random
from pathlib import Path

import nervaluate
from nervaluate import Evaluator

random.seed(13)
LABELS = ["LOC", "ORG", "PER", "MISC"]
TAGS = ["LOC", "ORG", "PER"]


def span():
    start = random.randrange(0, 60)
    return {"label": random.choice(LABELS), "start": start, "end": start + random.randrange(1, 12)}


docs = []
for _ in range(300):
    truth = [span() for _ in range(random.randrange(0, 5))]
    pred = []
    for t in truth:
        r = random.random()
        if r < 0.35:
            pred.append(dict(t))
        elif r < 0.5:
            pred.append({**t, "label": random.choice(LABELS)})
        elif r < 0.7:
            pred.append({**t, "end": t["end"] + random.randrange(-3, 4)})
    pred += [span() for _ in range(random.randrange(0, 3))]
    random.shuffle(pred)
    docs.append([truth, pred])

results = Evaluator([d[0] for d in docs], [d[1] for d in docs], tags=TAGS, loader="dict").evaluate()
fields = ["correct", "incorrect", "partial", "missed", "spurious", "precision", "recall", "f1"]


def dump(r):
    return {f: getattr(r, f) for f in fields}


out = {
    "nervaluate": nervaluate.__version__ if hasattr(nervaluate, "__version__") else "1.2.1",
    "tags": TAGS,
    "docs": docs,
    "overall": {k: dump(v) for k, v in results["overall"].items()},
    "entities": {t: {k: dump(v) for k, v in s.items()} for t, s in results["entities"].items()},
}
path = Path(__file__).resolve().parent.parent / "tests/fixtures/nervaluate_reference.json"
path.write_text(json.dumps(out))
print(f"wrote {path}: {len(docs)} documents")
