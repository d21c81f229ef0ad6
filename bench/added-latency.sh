#!/usr/bin/env bash
# Added latency per request: the same Anthropic Messages call sent directly to a local instant
# upstream (bench/mock-upstream) and through the gateway in front of it, one request at a time
# (closed loop, concurrency 1), whole and streamed. Prints p50 and p99 of both and their
# difference, the gateway's added latency. Every gateway request carries a real RS256 JWT that
# the gateway verifies, as in production.
#
#   bash bench/added-latency.sh              # 15 s per measurement
#   DURATION=5s bash bench/added-latency.sh  # quicker
#   GW_EXTRA_ENV=AIGW_AUTH__BYPASS_EXTERNAL=true bash bench/added-latency.sh
#                                            # without JWT verification (while no key source is wired)
#
# Pinning: the upstream, the gateway and the load generator each get their own CPU where the
# machine has enough (taskset); on 2 cores the gateway and the upstream share one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DUR="${DURATION:-15s}"
WARM="${WARMUP:-3s}"
DELTAS="${DELTAS:-16}"

say() { printf '==> %s\n' "$*" >&2; }

say "building release binaries"
cargo build --release --locked -p ai-gateway -p mock-upstream -p loadgen >&2
BIN=$ROOT/target/release
source "$ROOT/bench/lib.sh"
bench_scratch
NCPU=$(nproc)
pin() { # cpu, command...
  local cpu=$1; shift
  if command -v taskset >/dev/null 2>&1; then taskset -c "$cpu" "$@"; else "$@"; fi
}
if [ "$NCPU" -ge 3 ]; then UP_CPU=0; GW_CPU=1; LG_CPU=2; else UP_CPU=0; GW_CPU=0; LG_CPU=1; fi

signed_token "$WORK"

cat > "$WORK/direct.json" <<'JSON'
{"model":"claude-3-5-sonnet-20240620","max_tokens":4096,"messages":[{"role":"user","content":"def hello_world():"}],"temperature":0.2}
JSON
cat > "$WORK/direct-stream.json" <<'JSON'
{"model":"claude-3-5-sonnet-20240620","max_tokens":4096,"messages":[{"role":"user","content":"def hello_world():"}],"temperature":0.2,"stream":true}
JSON
bench_bodies "$WORK"  # gw.json, gw-stream.json: /v2/code/completions, as bench/run.sh

port=$(free_port)
# Started directly, not through `pin`: a backgrounded shell function is a subshell, and killing
# it at exit would leave the mock running.
UP_PIN=(); command -v taskset >/dev/null 2>&1 && UP_PIN=(taskset -c "$UP_CPU")
${UP_PIN[@]+"${UP_PIN[@]}"} "$BIN/mock-upstream" --listen "127.0.0.1:$port" --threads 1 --mode instant --deltas "$DELTAS" >"$WORK/mock.log" 2>&1 &
PIDS+=($!); MOCK="http://127.0.0.1:$port"; wait_http "$MOCK/health"

GATEWAY_WRAP=(); command -v taskset >/dev/null 2>&1 && GATEWAY_WRAP=(taskset -c "$GW_CPU")
# shellcheck disable=SC2086  # GW_EXTRA_ENV holds NAME=value words
start_gateway AIGW_HTTP__WORKERS=1 ${GW_EXTRA_ENV:-}

measure() { # name url body [headers...]
  local name=$1 url=$2 body=$3; shift 3
  pin "$LG_CPU" "$BIN/loadgen" --threads 1 closed --url "$url" --body "$body" "$@" \
    --concurrency 1 --duration "$DUR" --warmup "$WARM" >"$WORK/result-$name.json" 2>>"$WORK/loadgen.log"
}

say "whole answers: direct, then through the gateway ($DUR each)"
measure direct "$MOCK/v1/messages" "$WORK/direct.json"
measure gateway "$GW/v2/code/completions" "$WORK/gw.json" "${AUTH[@]}"
say "streamed answers ($DELTAS SSE deltas): direct, then through the gateway"
measure direct-stream "$MOCK/v1/messages" "$WORK/direct-stream.json"
measure gateway-stream "$GW/v2/code/completions" "$WORK/gw-stream.json" "${AUTH[@]}"

python3 - "$WORK" <<'PY'
import json, sys, os
work = sys.argv[1]
def load(n):
    with open(os.path.join(work, "result-" + n + ".json")) as f:
        return json.load(f)
print(f"{'':24}{'p50 µs':>10}{'p99 µs':>10}{'req/s':>10}{'ok':>8}{'failed':>8}")
rows = {}
for n in ["direct", "gateway", "direct-stream", "gateway-stream"]:
    r = load(n)
    lat = r["latency_us"]
    rows[n] = lat
    print(f"{n:24}{lat['p50']:>10}{lat['p99']:>10}{r['requests_per_s']:>10.0f}{r['requests']['ok']:>8}{r['requests']['failed']:>8}")
for kind, d, g in [("whole", "direct", "gateway"), ("streamed", "direct-stream", "gateway-stream")]:
    print(f"added latency, {kind:9}: p50 {rows[g]['p50'] - rows[d]['p50']:.1f} µs, p99 {rows[g]['p99'] - rows[d]['p99']:.1f} µs")
PY
