#!/usr/bin/env bash
# The Anthropic proxy's cost: the mock Anthropic upstream called directly and through
# `POST /v1/proxy/anthropic/v1/messages`, side by side in one run (closed-loop requests, then
# paced SSE streams). Uses the release binaries of bench/run.sh.
#
#   bash bench/proxy.sh            # about a minute
#
# Every gateway request carries an RS256-labelled token verified without its signature
# (AIGW_AUTH__BYPASS_JWT_SIGNATURE), so the authentication path runs except the RSA check.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DUR=${DUR:-5s}; WARM=${WARM:-1s}

cargo build --release --locked -p ai-gateway -p mock-upstream -p loadgen >&2
BIN=$ROOT/target/release
source "$ROOT/bench/lib.sh"
bench_scratch

TOKEN="$(printf '{"alg":"RS256","typ":"JWT"}' | b64url).$(printf '{"scopes":["duo_chat"]}' | b64url).c2ln"
AUTH=(-H "Authorization: Bearer $TOKEN" -H "X-Gitlab-Authentication-Type: oidc" -H "x-gitlab-unit-primitive: duo_chat")
printf '%s' '{"model":"claude-3-5-sonnet-20240620","max_tokens":64,"messages":[{"role":"user","content":"def hello_world():"}]}' >"$WORK/whole.json"
printf '%s' '{"model":"claude-3-5-sonnet-20240620","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"def hello_world():"}]}' >"$WORK/stream.json"

run() { # mode args...
  local mport gport
  mport=$(free_port); gport=$(free_port)
  "$BIN/mock-upstream" --listen "127.0.0.1:$mport" --threads 1 "$@" >/dev/null 2>&1 &
  PIDS+=($!)
  MOCK="http://127.0.0.1:$mport"; wait_http "$MOCK/health"
  env -i PATH="$PATH" AIGW_FASTAPI__API_HOST=127.0.0.1 AIGW_FASTAPI__API_PORT="$gport" \
      AIGW_FASTAPI__METRICS_HOST=127.0.0.1 AIGW_FASTAPI__METRICS_PORT="$(free_port)" \
      AIGW_LOGGING__TO_FILE="$WORK/gateway.log" AIGW_AUTH__BYPASS_JWT_SIGNATURE=true \
      ANTHROPIC_API_KEY=bench-key ANTHROPIC_BASE_URL="$MOCK" "$BIN/ai-gateway" &
  PIDS+=($!)
  GW="http://127.0.0.1:$gport"; wait_http "$GW/monitoring/healthz"
}

LG="$BIN/loadgen --threads 1"
run --mode instant
for c in 1 32; do
  echo "== whole answers, concurrency $c: direct, then through the proxy"
  $LG closed --url "$MOCK/v1/messages" --body "$WORK/whole.json" --concurrency "$c" --duration "$DUR" --warmup "$WARM"
  $LG closed --url "$GW/v1/proxy/anthropic/v1/messages" --body "$WORK/whole.json" "${AUTH[@]}" --concurrency "$c" --duration "$DUR" --warmup "$WARM"
done
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; PIDS=()

run --mode paced --deltas 64 --interval-ms 20
echo "== 64 paced SSE streams (64 deltas, 20 ms apart): direct, then through the proxy"
$LG streams --url "$MOCK/v1/messages" --body "$WORK/stream.json" --streams 64 --deltas 64 --interval-ms 20 --ramp-ms 500
$LG streams --url "$GW/v1/proxy/anthropic/v1/messages" --body "$WORK/stream.json" "${AUTH[@]}" --streams 64 --deltas 64 --interval-ms 20 --ramp-ms 500
