#!/usr/bin/env bash
# The benchmark kit: one command, everything on this machine, direct and through-gateway
# measured side by side in the same run.
#
#   bash bench/run.sh            # full run (about 15 minutes: 4 of scenarios, a 10-minute soak)
#   bash bench/run.sh --quick    # shorter runs and a 30 s soak, for a smoke test
#   SOAK_S=120 bash bench/run.sh # the full scenarios with a shorter soak (SOAK_S=0: none)
#
# Pieces: bench/mock-upstream (the provider: Anthropic Messages, instant or paced SSE),
# bench/loadgen (open/closed-loop load and SSE frame timing), the release gateway. Every
# gateway request carries a real RS256 JWT (a self-signed user token with scope complete_code,
# verified by the gateway on every request). Results: bench/results/<timestamp>/*.json and the
# table in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# 2,000 streams hold 2,000 client and 2,000 upstream sockets in the gateway.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
ROOT=$PWD

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
DUR=10s; WARM=2s; SWEEP="1 8 64 256"
[ $QUICK = 1 ] && { DUR=3s; WARM=1s; SWEEP="1 64"; }

say() { printf '\n==> %s\n' "$*" >&2; }

say "building release binaries"
cargo build --release --locked -p ai-gateway -p mock-upstream -p loadgen >&2
BIN=$ROOT/target/release
OUT=$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

source "$ROOT/bench/lib.sh"
bench_scratch

# --- a signing key and a realistic token -------------------------------------------------
signed_token "$WORK"

bench_bodies "$WORK"

loadgen() { "$BIN/loadgen" --threads 1 "$@" 2>>"$OUT/loadgen.log"; }

# --- non-streaming: concurrency sweep, direct vs gateway ---------------------------------
say "non-streaming sweep ($SWEEP), instant upstream"
start_mock --mode instant
start_gateway
GW_IDLE_RSS=$(rss_kb "$GW_PID")
for c in $SWEEP; do
  loadgen closed --url "$MOCK/v1/messages" --body "$WORK/anthropic.json" --concurrency "$c" --duration "$DUR" --warmup "$WARM" >"$OUT/direct-c$c.json"
  cpu0=$(cpu_s "$GW_PID")
  loadgen closed --url "$GW/v2/code/completions" --body "$WORK/gw.json" "${AUTH[@]}" --concurrency "$c" --duration "$DUR" --warmup "$WARM" >"$OUT/gateway-c$c.json"
  cpu1=$(cpu_s "$GW_PID")
  echo "$cpu0 $cpu1" >"$OUT/gateway-c$c.cpu"
done
GW_LOAD_RSS=$(rss_kb "$GW_PID")
# Concurrency 1 again with every process on one core: on a VM an idle vCPU takes tens of µs to
# wake, and the gateway path has two more wake-ups per request than the direct path, so the
# unpinned c=1 figure mostly measures the hypervisor. Pinned, a wake-up is a context switch.
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  for p in "$MOCK_PID" "$GW_PID"; do taskset -a -p -c 1 "$p" >/dev/null; done
  taskset -c 1 "$BIN/loadgen" --threads 1 closed --url "$MOCK/v1/messages" --body "$WORK/anthropic.json" --concurrency 1 --duration "$DUR" --warmup "$WARM" >"$OUT/direct-pinned-c1.json" 2>>"$OUT/loadgen.log"
  taskset -c 1 "$BIN/loadgen" --threads 1 closed --url "$GW/v2/code/completions" --body "$WORK/gw.json" "${AUTH[@]}" --concurrency 1 --duration "$DUR" --warmup "$WARM" >"$OUT/gateway-pinned-c1.json" 2>>"$OUT/loadgen.log"
fi
kill "$GW_PID" "$MOCK_PID"; sleep 0.5

# --- streaming: 64 deltas paced 20 ms -----------------------------------------------------
STREAMS="100 1000 2000"; [ $QUICK = 1 ] && STREAMS="100 500"
say "streaming: 64 deltas every 20 ms at $STREAMS concurrent streams"
start_mock --mode paced --deltas 64 --interval-ms 20
start_gateway
for n in $STREAMS; do
  ramp=$(( n / 2 ))
  loadgen streams --url "$MOCK/v1/messages" --body "$WORK/anthropic-stream.json" --streams "$n" --deltas 64 --interval-ms 20 --ramp-ms "$ramp" >"$OUT/direct-streams$n.json"
  loadgen streams --url "$GW/v2/code/completions" --body "$WORK/gw-stream.json" "${AUTH[@]}" --streams "$n" --deltas 64 --interval-ms 20 --ramp-ms "$ramp" >"$OUT/gateway-streams$n.json" &
  LG=$!; sleep 1.0; echo "$(rss_kb "$GW_PID")" >"$OUT/gateway-streams$n.rss"; wait $LG
done
GW_AFTER_RSS=$(rss_kb "$GW_PID")
kill "$GW_PID" "$MOCK_PID"; sleep 0.5

# --- the mock model: /v2/code/completions throughput -------------------------------------
say "mock-model /v2/code/completions throughput at concurrency 64"
start_mock --mode instant
start_gateway AIGW_MOCK_MODEL_RESPONSES=true
loadgen closed --url "$GW/v2/code/completions" --body "$WORK/mock-model.json" "${AUTH[@]}" --concurrency 64 --duration "$DUR" --warmup "$WARM" >"$OUT/mock-model-c64.json"
kill "$GW_PID" "$MOCK_PID"; sleep 0.2

# --- soak: RSS over ten minutes of mixed traffic -------------------------------------------
# Whole answers at a steady rate and rounds of paced streams, both through one fresh gateway,
# with its RSS sampled every 5 s. The steady state starts a tenth of the way in (allocator pools,
# upstream connections and the token cache warmed); report.py compares the median of the last
# tenth's samples with the median of the tenth from there (a sample lands anywhere in a round of
# streams, so single samples swing by the streams' buffers).
SOAK_S=${SOAK_S:-600}; [ $QUICK = 1 ] && SOAK_S=${SOAK_S_QUICK:-30}
if [ "$SOAK_S" -gt 0 ]; then
  say "soak: $SOAK_S s of whole answers at 1,000 req/s and rounds of 200 paced streams"
  start_mock --mode paced --deltas 64 --interval-ms 20
  start_gateway
  : >"$OUT/soak-rss.txt"; : >"$OUT/soak-streams.jsonl"
  ( t0=$(date +%s); while :; do echo "$(( $(date +%s) - t0 )) $(rss_kb "$GW_PID")" >>"$OUT/soak-rss.txt"; sleep 5; done ) &
  SAMPLER=$!; PIDS+=("$SAMPLER")
  loadgen rate --url "$GW/v2/code/completions" --body "$WORK/gw.json" "${AUTH[@]}" --rate 1000 --connections 64 --duration "${SOAK_S}s" >"$OUT/soak-whole.json" &
  WHOLE=$!
  end=$(( $(date +%s) + SOAK_S - 2 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    loadgen streams --url "$GW/v2/code/completions" --body "$WORK/gw-stream.json" "${AUTH[@]}" --streams 200 --deltas 64 --interval-ms 20 --ramp-ms 100 | tr -d '\n' >>"$OUT/soak-streams.jsonl"
    echo >>"$OUT/soak-streams.jsonl"
  done
  wait "$WHOLE"
  kill "$SAMPLER"; sleep 1
  rss_kb "$GW_PID" >"$OUT/soak-rss-after.txt"
  kill "$GW_PID" "$MOCK_PID"; sleep 0.2
fi

# --- report --------------------------------------------------------------------------------
# What report.py needs besides the JSON files, kept with them so a report can be made again.
cat >"$OUT/run.txt" <<EOF
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src actors Cargo.lock || echo "+local changes")
idle_kb=$GW_IDLE_RSS
load_kb=$GW_LOAD_RSS
after_kb=$GW_AFTER_RSS
quick=$QUICK
sweep=$SWEEP
streams=$STREAMS
soak_s=$SOAK_S
EOF
python3 bench/report.py "$OUT"
say "results in $OUT; table written to BENCHMARKS.md"
