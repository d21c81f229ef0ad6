#!/usr/bin/env bash
# The chaos soak: the chaos suite's mixed traffic (whole and streamed calls, an untargeted text
# model and a fault-injected chat model) for CHAOS_SOAK_SECONDS (default 600) with
# CHAOS_SOAK_WORKERS concurrent callers (default 16), killing a request actor, the JWKS actors, the
# quota actors and the request subtree in turn, one kill every CHAOS_SOAK_KILL_EVERY_MS (default 1000,
# which keeps the restarts inside the default restart budget), with authenticated traffic
# throughout, against a release build. Prints the result table (requests sent, failed, restarted
# actors, RSS before/after) and fails if any invariant of tests/chaos.rs breaks or RSS grew by
# more than 10 %.
#
#   bash bench/chaos-soak.sh                    # ten minutes
#   CHAOS_SOAK_SECONDS=60 bash bench/chaos-soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CHAOS_SOAK_SECONDS="${CHAOS_SOAK_SECONDS:-600}"
export CHAOS_SOAK_WORKERS="${CHAOS_SOAK_WORKERS:-16}"
exec cargo test --release --locked --test chaos chaos_soak -- --ignored --nocapture
