#!/usr/bin/env python3
"""Turn one bench/run.sh result directory into the tables of BENCHMARKS.md.

Every figure comes from the same run: direct-to-mock and through-gateway side by side, so the
added cost is the difference of two measurements taken minutes apart on the same machine.
"""
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone

out, idle_kb, load_kb, after_kb, quick, sweep, streams = sys.argv[1:8]
sweep = sweep.split()
streams = streams.split()


def load(name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)


def us(v):
    return "—" if v is None else f"{v:,.0f} µs" if v >= 100 else f"{v:.1f} µs"


def lat(d, key):
    lat = d.get("latency_us") or {}
    return lat.get(key)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
lines = []
lines.append("# Benchmarks\n")
lines.append(
    f"Machine: {os.cpu_count()} cores ({cpu_model()}), {platform.system()} {platform.release()}; "
    f"everything on one box (mock upstream 1 thread, load driver 1 thread, gateway with one HTTP "
    f"worker per core). Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. "
    f"Commit: `{commit}`. Command: `bash bench/run.sh{' --quick' if quick == '1' else ''}`.\n"
)
lines.append(
    "Direct = load driver → mock upstream. Gateway = load driver → gateway → mock upstream, "
    "with an RS256 JWT verified on every request (a self-signed user token; the verified-token "
    "cache is on, as in production). Latencies are measured by the driver; added = gateway − direct "
    "at the same percentile.\n"
)

lines.append("## Non-streaming, instant upstream (closed loop)\n")
lines.append("| concurrency | direct req/s | gateway req/s | gateway/direct | direct p50 | gateway p50 | added p50 | direct p99 | gateway p99 | added p99 | gateway CPU per request |")
lines.append("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
for c in sweep:
    d, g = load(f"direct-c{c}.json"), load(f"gateway-c{c}.json")
    with open(os.path.join(out, f"gateway-c{c}.cpu")) as f:
        c0, c1 = map(float, f.read().split())
    ok = g["requests"]["ok"] or 1
    cpu_per = (c1 - c0) / ok * 1e6
    ratio = g["requests_per_s"] / d["requests_per_s"] if d["requests_per_s"] else 0
    dp50, gp50, dp99, gp99 = lat(d, "p50"), lat(g, "p50"), lat(d, "p99"), lat(g, "p99")
    fails = g["requests"]["failed"]
    lines.append(
        f"| {c} | {d['requests_per_s']:,.0f} | {g['requests_per_s']:,.0f}{' (' + str(fails) + ' failed)' if fails else ''} | {ratio:.0%} "
        f"| {us(dp50)} | {us(gp50)} | {us(gp50 - dp50)} | {us(dp99)} | {us(gp99)} | {us(gp99 - dp99)} | {cpu_per:,.0f} µs |"
    )

if os.path.exists(os.path.join(out, "gateway-pinned-c1.json")):
    d, g = load("direct-pinned-c1.json"), load("gateway-pinned-c1.json")
    dp50, gp50, dp99, gp99 = lat(d, "p50"), lat(g, "p50"), lat(d, "p99"), lat(g, "p99")
    lines.append(
        f"\nConcurrency 1 with mock, gateway and driver pinned to one core (`taskset -c 1`; no "
        f"cross-core wake-ups of idle vCPUs): direct {d['requests_per_s']:,.0f} req/s, p50 {us(dp50)}, "
        f"p99 {us(dp99)}; gateway {g['requests_per_s']:,.0f} req/s, p50 {us(gp50)}, p99 {us(gp99)}; "
        f"**added p50 {us(gp50 - dp50)}, p99 {us(gp99 - dp99)}**."
    )

lines.append("\n## Streaming: 64 deltas paced 20 ms (Anthropic SSE upstream → /v2/code/completions raw-text stream to the client)\n")
lines.append("| streams | direct ok/dropped | gateway ok/dropped | late frames (gw) | direct TTFT p50/p99 | gateway TTFT p50/p99 | added TTFT p99 | direct gap p99 | gateway gap p99 | added gap p99 | gateway RSS |")
lines.append("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
for n in streams:
    d, g = load(f"direct-streams{n}.json"), load(f"gateway-streams{n}.json")
    ds, gs = d["streams"], g["streams"]
    with open(os.path.join(out, f"gateway-streams{n}.rss")) as f:
        rss = int(f.read().strip() or 0)
    dt, gt = ds.get("ttft_us") or {}, gs.get("ttft_us") or {}
    dg, gg = ds.get("gap_us") or {}, gs.get("gap_us") or {}
    add_ttft = (gt.get("p99") or 0) - (dt.get("p99") or 0)
    add_gap = (gg.get("p99") or 0) - (dg.get("p99") or 0)
    lines.append(
        f"| {n} | {ds['ok']}/{ds['dropped'] + ds['failed']} | {gs['ok']}/{gs['dropped'] + gs['failed']} | {gs.get('late_frames', 0)} "
        f"| {us(dt.get('p50'))} / {us(dt.get('p99'))} | {us(gt.get('p50'))} / {us(gt.get('p99'))} | {us(add_ttft)} "
        f"| {us(dg.get('p99'))} | {us(gg.get('p99'))} | {us(add_gap)} | {rss / 1024:.0f} MB |"
    )

m = load("mock-model-c64.json")
lines.append("\n## Mock model (`AIGW_MOCK_MODEL_RESPONSES=true`), `/v2/code/completions`, concurrency 64\n")
lines.append(f"{m['requests_per_s']:,.0f} requests/s, p50 {us(lat(m, 'p50'))}, p99 {us(lat(m, 'p99'))}, "
             f"{m['requests']['failed']} failed (the original: about 150–200 requests/s on 2 cores).\n")

lines.append("## Memory (gateway RSS)\n")
lines.append(f"Idle after start: {int(idle_kb) / 1024:.1f} MB. After the non-streaming sweep: {int(load_kb) / 1024:.1f} MB. "
             f"After the streaming runs: {int(after_kb) / 1024:.1f} MB.\n")

# The hand-written analysis below the generated tables (from the marker on) survives a new run.
MARKER = "<!-- analysis: kept by bench/report.py across runs -->"
kept = ""
if os.path.exists("BENCHMARKS.md"):
    with open("BENCHMARKS.md") as f:
        old = f.read()
    if MARKER in old:
        kept = old[old.index(MARKER):]
with open("BENCHMARKS.md", "w") as f:
    f.write("\n".join(lines) + "\n")
    if kept:
        f.write("\n" + kept)
print("\n".join(lines))
