#!/usr/bin/env bash
# Named-entity recognition (CoNLL-2003, Autolabel's conll2003 attribute_extraction config) and
# extractive QA (SQuAD 2.0 dev half, Autolabel's squad_v2 config) with both built-in models:
# span F1 per nervaluate scheme, exact match / token F1, rows/s and generated tokens/s.
# Usage: benches/open_tasks.sh [NER_ROWS] [QA_ROWS] [MODELS]   (defaults 100, 30 and both models;
# run from the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
NER_ROWS=${1:-100}
QA_ROWS=${2:-30}
MODELS=${3:-"smollm2-135m-instruct qwen2.5-coder-0.5b-instruct"}
SHARED=../shared/data
BIN=target/release/autolabel-local
cargo build --release -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$SHARED" "$work" <<'PY'
import json, sys
shared, work = sys.argv[1], sys.argv[2]
c = json.load(open(f"{shared}/autolabel_configs/benchmark_configs_HEAD/conll2003.json"))
c["prompt"].pop("few_shot_examples"); c["prompt"].pop("few_shot_num"); c["prompt"].pop("few_shot_selection")
json.dump(c, open(f"{work}/conll_0shot.json", "w"))
c["prompt"].update(few_shot_examples=f"{shared}/autolabel_conll2003/seed.csv", few_shot_selection="fixed", few_shot_num=3)
json.dump(c, open(f"{work}/conll_3shot.json", "w"))
q = json.load(open(f"{shared}/autolabel_configs/examples_configs_HEAD/config_squad_v2.json"))
q["prompt"].pop("few_shot_examples"); q["prompt"].pop("few_shot_num"); q["prompt"].pop("few_shot_selection")
json.dump(q, open(f"{work}/squad.json", "w"))
PY
for model in $MODELS; do
  for shots in 0shot 3shot; do
    echo "== NER $model $shots, $NER_ROWS rows of autolabel_conll2003/test_head_small.csv"
    $BIN run --config "$work/conll_$shots.json" --data $SHARED/autolabel_conll2003/test_head_small.csv \
      --model $model --max-items "$NER_ROWS" --out "$work/ner_${model}_$shots.csv" 2>&1 \
      | grep -E "labeled |could not|^scheme|^strict|^exact|^partial|^ent_type|^accuracy" || true
  done
  echo "== QA $model 0shot, $QA_ROWS rows of squad_v2_dev_half/dev_half.csv"
  $BIN run --config "$work/squad.json" --data $SHARED/squad_v2_dev_half/dev_half.csv \
    --model $model --max-items "$QA_ROWS" --out "$work/qa_$model.csv" 2>&1 \
    | grep -E "labeled |could not|^threshold|^ *0\.00 " || true
done
