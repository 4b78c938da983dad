#!/bin/sh
# Label, wait, merge: the whole flow with kubectl (namespace from your context).
# Before: build and push the image (docker build -f examples/kubernetes/Dockerfile .), put
# task.json and data/records.csv on the volume, and fill /work/cache from a machine with
# internet access, e.g. by copying ~/.cache/autolabel-local after one `autolabel-local run
# --max-items 1` there.
set -eu
cd "$(dirname "$0")"
kubectl apply -f storage.yaml
kubectl apply -f label-job.yaml
kubectl wait --for=condition=complete --timeout=48h job/autolabel-label
kubectl apply -f merge-job.yaml
kubectl wait --for=condition=complete --timeout=2h job/autolabel-merge
kubectl logs job/autolabel-merge
