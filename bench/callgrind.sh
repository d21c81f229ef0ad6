#!/usr/bin/env bash
# Instructions per request through the gateway, free of the host's noise: the release gateway
# under callgrind, one closed-loop client (concurrency 1) for 10 s after a 2 s warm-up, against
# the instant mock upstream. Prints requests, instructions and instructions per request, and
# leaves the profile for `callgrind_annotate --inclusive=yes <file>`.
#
#   bash bench/callgrind.sh            # /v2/code/completions → Anthropic mock, non-streaming
#   bash bench/callgrind.sh streams    # 20 streams of 64 deltas paced 20 ms: instructions per frame
#
# Needs valgrind (apt-get install valgrind). Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-requests}
case "$MODE" in requests|streams) ;; *) echo "usage: $0 [requests|streams]" >&2; exit 2 ;; esac
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
cargo build --release --locked -p ai-gateway -p mock-upstream -p loadgen >&2
BIN=$PWD/target/release
OUT=$PWD/bench/results/callgrind-$(date -u +%Y%m%dT%H%M%SZ).out
mkdir -p bench/results
source bench/lib.sh
bench_scratch

# The same signed token and bodies as bench/run.sh.
signed_token "$WORK"
bench_bodies "$WORK"
MOCK_MODE=(--mode instant)
[ "$MODE" = streams ] && MOCK_MODE=(--mode paced --deltas 64 --interval-ms 20)

start_mock "${MOCK_MODE[@]}"
GATEWAY_WRAP=(valgrind --tool=callgrind --callgrind-out-file="$OUT" --dump-instr=no)
GATEWAY_WAIT=1200 start_gateway  # valgrind starts slowly
VG=$GW_PID
URL="$GW/v2/code/completions"
if [ "$MODE" = streams ]; then
  # Under valgrind the gateway runs ~50 times slower: 20 streams (1,000 frames/s) keep up.
  STREAMS=(--body "$WORK/gw-stream.json" --deltas 64 --interval-ms 20 --ramp-ms 200)
  "$BIN/loadgen" --threads 1 streams --url "$URL" "${AUTH[@]}" "${STREAMS[@]}" --streams 5 >/dev/null
  callgrind_control -z "$VG" >/dev/null
  "$BIN/loadgen" --threads 1 streams --url "$URL" "${AUTH[@]}" "${STREAMS[@]}" --streams 20 >"$WORK/run.json"
else
  "$BIN/loadgen" --threads 1 closed --url "$URL" --body "$WORK/gw.json" "${AUTH[@]}" --concurrency 1 --duration 2s >/dev/null
  callgrind_control -z "$VG" >/dev/null
  "$BIN/loadgen" --threads 1 closed --url "$URL" --body "$WORK/gw.json" "${AUTH[@]}" --concurrency 1 --duration 10s >"$WORK/run.json"
fi
callgrind_control -d "$VG" >/dev/null
sleep 1
# The explicit dump is the first numbered part: the measured window only.
PROFILE="$OUT.1"
TOTAL=$(callgrind_annotate "$PROFILE" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
if [ "$MODE" = streams ]; then
  read -r STREAMS_OK STREAMS_ASKED FRAMES < <(python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['streams']; print(s['ok'], s['requested'], s['frames_received'])" "$WORK/run.json")
  echo "clean streams: $STREAMS_OK of $STREAMS_ASKED, frames: $FRAMES"
  # Instructions spent on a dropped or failed stream would be charged to the clean ones.
  [ "$STREAMS_OK" -gt 0 ] && [ "$STREAMS_OK" = "$STREAMS_ASKED" ] || { echo "not every stream was clean: no figure" >&2; exit 1; }
  echo "instructions: $TOTAL"
  echo "instructions per stream: $((TOTAL / STREAMS_OK)) (per frame, the stream's start included: $((TOTAL / FRAMES)))"
else
  REQUESTS=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['requests']['ok'])" "$WORK/run.json")
  echo "requests: $REQUESTS"
  echo "instructions: $TOTAL"
  echo "instructions per request: $((TOTAL / REQUESTS))"
fi
echo "profile: $PROFILE"
