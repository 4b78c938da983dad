#!/usr/bin/env bash
# A sharded run under a real Slurm: starts a one-node cluster on this machine (munged, slurmctld,
# slurmd; config in a temporary folder through SLURM_CONF, nothing in /etc/slurm), submits
# examples/slurm/label.sbatch (a 4-task array over ROWS SMS, default 400, and a dependent merge
# job), requeues task 1 while it runs (Slurm kills it and starts it again; it resumes from its
# journal), and checks that the merged output equals one unsharded run byte for byte.
#
#   scripts/slurm_test.sh [ROWS]     (as root; installs slurm-wlm and munge with apt-get if absent)
#
# Environment: BIN (the binary, default target/release), MODEL (default: the config's, SmolLM2).
# Where a real Slurm cannot start (not root, no packages, a daemon that will not come up), it says
# why and runs the same check with the shards as plain processes with Slurm's variables set
# (cargo test --release --test shards); with FALLBACK=none it only says why and exits 0 (what
# tests/slurm.rs uses: the plain-process test runs in the same suite).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROWS=${1:-400}
BIN=${BIN:-$ROOT/target/release/autolabel-local}
CONFIG=$ROOT/examples/sms_spam/config.json
MODEL_ARGS=""
[ -n "${MODEL:-}" ] && MODEL_ARGS="--model $MODEL"
DATA=$ROOT/../shared/data/sms_spam/SMSSpamCollection.tsv

fallback() {
    echo "slurm_test: no real Slurm here: $1"
    [ "${FALLBACK:-plain}" = none ] && exit 0
    echo "slurm_test: running the same check with the shards as plain processes (cargo test --release --test shards)"
    cd "$ROOT" && exec cargo test --release --test shards
}
[ "$(id -u)" = 0 ] || fallback "munged, slurmctld and slurmd need root here"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge) >/dev/null 2>&1 ||
        fallback "slurm-wlm and munge are not installed and apt-get could not install them"
fi
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release)
[ -f "$DATA" ] || { echo "slurm_test: $DATA is missing"; exit 1; }

D=$(mktemp -d /tmp/slurm_test.XXXXXX)
mkdir -p "$D"/{spool,state,log,work}
H=$(hostname)
CPUS=$(nproc)
export SLURM_CONF=$D/slurm.conf
cat >"$SLURM_CONF" <<CONF
ClusterName=autolabeltest
SlurmctldHost=$H
AuthType=auth/munge
AuthInfo=cred_expire=20
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmUser=root
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmdSpoolDir=$D/spool
StateSaveLocation=$D/state
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
SlurmctldLogFile=$D/log/ctld.log
SlurmdLogFile=$D/log/d.log
NodeName=$H CPUs=$CPUS RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF

STARTED_MUNGE=""
cleanup() {
    for p in "$D/slurmd.pid" "$D/slurmctld.pid"; do
        [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
    done
    if [ -n "$STARTED_MUNGE" ] && [ -f /run/munge/munged.pid ]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    fi
}
trap cleanup EXIT

if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge /etc/munge
    [ -f /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 2>/dev/null
    chown -R munge:munge /run/munge /etc/munge && chmod 600 /etc/munge/munge.key
    su -s /bin/sh munge -c /usr/sbin/munged || fallback "munged did not start"
    STARTED_MUNGE=1
fi
slurmctld || fallback "slurmctld did not start (log: $D/log/ctld.log)"
sleep 2
slurmd || fallback "slurmd did not start (log: $D/log/d.log)"
for _ in $(seq 30); do
    [ "$(sinfo -h -o %t 2>/dev/null)" = idle ] && break
    sleep 1
done
[ "$(sinfo -h -o %t 2>/dev/null)" = idle ] || fallback "the node did not come up idle (logs in $D/log)"
echo "slurm_test: one-node cluster up ($(sinfo -h -o '%P %D %t %c')); work in $D/work"

cd "$D/work"
t0=$(date +%s.%N)
"$BIN" run --config "$CONFIG" --data "$DATA" --max-items "$ROWS" $MODEL_ARGS --out single.tsv >single.metrics 2>single.log ||
    { echo "slurm_test: FAILED: the unsharded run failed"; cat single.log; exit 1; }
t1=$(date +%s.%N)
echo "slurm_test: unsharded run of $ROWS rows: $(echo "$t1 - $t0" | bc) s"

submitted=$(CONFIG=$CONFIG DATA=$DATA OUT=$D/work/labeled.tsv SHARDS=4 LOGS=$D/work/logs \
    EXTRA="--max-items $ROWS $MODEL_ARGS" AUTOLABEL_LOCAL=$BIN bash "$ROOT/examples/slurm/label.sbatch")
echo "slurm_test: $submitted"
array=$(echo "$submitted" | sed -n 's/^array job \([0-9]*\).*/\1/p')
merge=$(echo "$submitted" | sed -n 's/.*merge job \([0-9]*\).*/\1/p')
t2=$(date +%s.%N)

fail() {
    echo "slurm_test: FAILED: $1"
    squeue || true
    tail -n 20 "$D"/log/*.log logs/*.log 2>/dev/null || true
    exit 1
}
# Requeue task 1 once it runs and its journal holds rows.
shard1=labeled.shard-1-of-4.tsv
ready=""
for _ in $(seq 600); do
    state=$(squeue -h -j "${array}_1" -o %T 2>/dev/null || true)
    if [ "$state" = RUNNING ] && "$BIN" status --out "$shard1" 2>/dev/null | grep -Eq '^  [1-9][0-9]* of'; then
        ready=1
        break
    fi
    sleep 0.5
done
[ -n "$ready" ] || fail "task 1 was not running with rows in its journal after 5 minutes"
echo "slurm_test: task 1 before the requeue: $("$BIN" status --out "$shard1" | sed -n 2p)"
scontrol requeue "${array}_1"
echo "slurm_test: requeued task ${array}_1 (Slurm holds a requeued task for cred_expire, 20 s here, before it starts again)"

done_=""
for _ in $(seq 900); do
    if [ -z "$(squeue -h -j "$merge" 2>/dev/null)" ]; then
        done_=1
        break
    fi
    sleep 1
done
[ -n "$done_" ] || fail "the merge job had not finished after 15 minutes"
t3=$(date +%s.%N)
echo "slurm_test: array + merge finished in $(echo "$t3 - $t2" | bc) s"
cat logs/merge.log
grep -h "came from the journal" logs/shard_1.log ||
    { echo "slurm_test: FAILED: the requeued task did not resume from its journal"; cat logs/shard_1.log; exit 1; }
[ -f labeled.tsv ] || { echo "slurm_test: FAILED: no merged output"; cat logs/*.log; exit 1; }
cmp labeled.tsv single.tsv || { echo "slurm_test: FAILED: the merged output differs from the unsharded run"; exit 1; }
echo "slurm_test: PASSED: the merged output of 4 Slurm array tasks (one requeued mid-run) equals the unsharded run ($ROWS rows, $(wc -c <labeled.tsv) bytes)"
