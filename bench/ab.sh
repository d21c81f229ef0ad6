#!/usr/bin/env bash
# Two gateway binaries side by side in one run, alternating A, B, A, B, ...: the A/B of a
# hot-path change on a host whose speed drifts between runs minutes apart. Per round and binary:
#
#   c1      closed loop at concurrency 1, mock, gateway and driver pinned to one core, 5 s
#           after a 1 s warm-up
#   c64     closed loop at concurrency 64, 5 s (unpinned): requests/s and the gateway's CPU per
#           request
#   streams 1,000 streams of 64 deltas paced 20 ms (ramp 500 ms): TTFT p99, gap p99, late frames
#
# and once per round the same c1 and streams runs direct to the mock, for the added figures.
# Prints one line per run and then the median of each figure per binary.
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]   # default 3 rounds, about 2 minutes
#   B_ENV="AIGW_LOGGING__LEVEL=WARNING" bash bench/ab.sh BIN BIN   # one binary, two settings
#
# A_ENV and B_ENV (NAME=value words) are extra settings for each side's gateway. Build the two
# binaries first, e.g. `cargo build --release -p ai-gateway` at each commit and copy
# target/release/ai-gateway aside. Needs 2 cores and taskset (util-linux). Nothing else should
# run on the machine meanwhile. Any failed request or dropped stream is reported per round.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# 1,000 streams hold 1,000 client and 1,000 upstream sockets in the gateway.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [ROUNDS]" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-3}
for bin in "$A" "$B"; do [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }; done
command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ] || { echo "needs taskset and 2 cores" >&2; exit 2; }
cargo build --release --locked -p mock-upstream -p loadgen >&2
BIN=$ROOT/target/release
source "$ROOT/bench/lib.sh"
bench_scratch
signed_token "$WORK"
bench_bodies "$WORK"
lg() { "$BIN/loadgen" --threads 1 "$@" 2>>"$WORK/loadgen.log"; }
STREAMS=(--deltas 64 --interval-ms 20 --streams 1000 --ramp-ms 500)

# run ROUND LABEL ENV...: the three scenarios against the gateway binary $GATEWAY_BIN with the
# settings ENV, one JSON file each.
run() {
  local round=$1 label=$2 cpu0 cpu1; shift 2
  start_mock --mode instant
  start_gateway "$@"
  taskset -a -p -c 1 "$GW_PID" >/dev/null; taskset -a -p -c 1 "$MOCK_PID" >/dev/null
  lg closed --url "$GW/v2/code/completions" --body "$WORK/gw.json" "${AUTH[@]}" --concurrency 1 --duration 1s >/dev/null
  taskset -c 1 "$BIN/loadgen" --threads 1 closed --url "$GW/v2/code/completions" --body "$WORK/gw.json" "${AUTH[@]}" \
    --concurrency 1 --duration 5s 2>>"$WORK/loadgen.log" >"$WORK/$round-$label-c1.json"
  taskset -a -p -c 0,1 "$GW_PID" >/dev/null; taskset -a -p -c 0,1 "$MOCK_PID" >/dev/null
  cpu0=$(cpu_s "$GW_PID")
  lg closed --url "$GW/v2/code/completions" --body "$WORK/gw.json" "${AUTH[@]}" --concurrency 64 --duration 5s >"$WORK/$round-$label-c64.json"
  cpu1=$(cpu_s "$GW_PID")
  echo "$cpu0 $cpu1" >"$WORK/$round-$label-c64.cpu"
  kill "$GW_PID" "$MOCK_PID"; sleep 0.3
  start_mock --mode paced --deltas 64 --interval-ms 20
  start_gateway "$@"
  lg streams --url "$GW/v2/code/completions" --body "$WORK/gw-stream.json" "${AUTH[@]}" "${STREAMS[@]}" >"$WORK/$round-$label-streams.json"
  kill "$GW_PID" "$MOCK_PID"; sleep 0.3
}

direct() {
  local round=$1
  start_mock --mode instant
  taskset -a -p -c 1 "$MOCK_PID" >/dev/null
  taskset -c 1 "$BIN/loadgen" --threads 1 closed --url "$MOCK/v1/messages" --body "$WORK/anthropic.json" \
    --concurrency 1 --duration 5s --warmup 1s 2>>"$WORK/loadgen.log" >"$WORK/$round-direct-c1.json"
  kill "$MOCK_PID"; sleep 0.3
  start_mock --mode paced --deltas 64 --interval-ms 20
  lg streams --url "$MOCK/v1/messages" --body "$WORK/anthropic-stream.json" "${STREAMS[@]}" >"$WORK/$round-direct-streams.json"
  kill "$MOCK_PID"; sleep 0.3
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  direct "$round"
  # Alternate which binary goes first, so neither always follows the direct runs.
  if [ $((round % 2)) = 1 ]; then order="A B"; else order="B A"; fi
  for label in $order; do
    if [ "$label" = A ]; then GATEWAY_BIN=$A; ENV=${A_ENV:-}; else GATEWAY_BIN=$B; ENV=${B_ENV:-}; fi
    export GATEWAY_BIN
    # shellcheck disable=SC2086  # ENV holds NAME=value words
    run "$round" "$label" $ENV
  done
done

python3 - "$WORK" "$ROUNDS" "$A ${A_ENV:-}" "$B ${B_ENV:-}" <<'PY'
import json, statistics, sys
work, rounds, a, b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
load = lambda name: json.load(open(f"{work}/{name}.json"))
def p(summary, q):
    # A run without one successful sample has no latency summary.
    return float("nan") if summary is None else summary[q]
def figures(r, label):
    c1, d1 = load(f"{r}-{label}-c1"), load(f"{r}-direct-c1")
    c64 = load(f"{r}-{label}-c64")
    cpu0, cpu1 = map(float, open(f"{work}/{r}-{label}-c64.cpu").read().split())
    s, ds = load(f"{r}-{label}-streams")["streams"], load(f"{r}-direct-streams")["streams"]
    return {
        "c1 added p50 us": p(c1["latency_us"], "p50") - p(d1["latency_us"], "p50"),
        "c1 added p99 us": p(c1["latency_us"], "p99") - p(d1["latency_us"], "p99"),
        "c1+c64 failed requests": c1["requests"]["failed"] + c64["requests"]["failed"],
        "c64 req/s": c64["requests_per_s"],
        "c64 CPU us/req": (cpu1 - cpu0) / max(c64["requests"]["ok"], 1) * 1e6,
        "streams added TTFT p99 us": p(s["ttft_us"], "p99") - p(ds["ttft_us"], "p99"),
        "streams added gap p99 us": p(s["gap_us"], "p99") - p(ds["gap_us"], "p99"),
        "streams late frames": s["late_frames"],
        "streams dropped": s["dropped"] + s["failed"],
    }
runs = {label: [figures(r, label) for r in range(1, rounds + 1)] for label in "AB"}
print(f"A = {a}\nB = {b}")
keys = list(runs["A"][0])
for label in "AB":
    for r, f in enumerate(runs[label], 1):
        print(f"round {r} {label}: " + ", ".join(f"{k} {v:,.1f}" for k, v in f.items()))
print(f"\n| figure (median of {rounds}) | A | B | B/A |\n|---|--:|--:|--:|")
for k in keys:
    ma = statistics.median(f[k] for f in runs["A"])
    mb = statistics.median(f[k] for f in runs["B"])
    ratio = f"{mb / ma:.2f}" if ma else "-"
    print(f"| {k} | {ma:,.1f} | {mb:,.1f} | {ratio} |")
PY
