#!/usr/bin/env python3
"""Each figure of issue 12 (BENCHMARKS.md's proxy targets) beside its target, met / missed.

Reads the summary.md that the peers script wrote for each candidate of one bench/run.sh
invocation (RESULTS/<timestamp>/<candidate>/summary.md) and prints one markdown table. A figure
whose run is missing (e.g. ONLY=weft) is "not run"; a figure from a run where other processes
took more than 5 % CPU is marked "noisy" (BENCHMARKS.md: quote only quiet runs).

usage: targets.py RESULTS/<timestamp>
"""
import os
import re
import sys

base = sys.argv[1]
QUIET_PCT = 5.0


def tables(name):
    """{kind: {target: row}} from one candidate's summary.md; kind is 'wrk' or 'fixed'."""
    path = os.path.join(base, name, "summary.md")
    if not os.path.exists(path):
        return None
    out, kind, rate = {}, None, None
    for line in open(path):
        if line.startswith("### Saturation"):
            kind = "wrk"
        elif line.startswith("### Fixed rate"):
            kind = "fixed"
        m = re.search(r"\bRATE=(\d+)", line)
        if m:
            rate = int(m.group(1))
        if kind and line.startswith("| ") and not line.startswith("| target"):
            c = [x.strip() for x in line.strip().strip("|").split("|")]
            num = lambda s: None if s in ("-", "(backend)") else float(s.split()[0])
            out.setdefault(kind, {})[c[0]] = {
                "rps": num(c[1]), "p50": num(c[4]), "p99": num(c[6]), "rss": num(c[8]),
                "cpu": num(c[9]), "foreign": num(c[12]),
            }
    out["rate"] = rate
    return out


rows = []  # (figure, target, measured, verdict)


def verdict(ok, *runs):
    if ok is None:
        return "not run"
    noisy = any(r and r.get("foreign") is not None and r["foreign"] > QUIET_PCT for r in runs)
    return ("met" if ok else "missed") + (" (noisy run)" if noisy else "")


def fmt(v, nd=1, unit=""):
    return "-" if v is None else f"{v:.{nd}f}{unit}"


one = tables("weft")
if one and "wrk" in one:
    w, n, h = (one["wrk"].get(t) for t in ("weft", "nginx", "haproxy"))
    ratio = w["cpu"] / n["cpu"]
    rows.append(("CPU per request, one proxy, HTTP/1.1 keep-alive (saturation)",
                 "≤ 0.83× nginx and < haproxy",
                 f"{fmt(w['cpu'])} µs = {ratio:.2f}× nginx ({fmt(n['cpu'])}), haproxy {fmt(h['cpu'])}",
                 verdict(ratio <= 0.83 and w["cpu"] < h["cpu"], w, n, h)))
else:
    rows.append(("CPU per request, one proxy", "≤ 0.83× nginx and < haproxy", "-", "not run"))

if one and "fixed" in one:
    d, w, n = (one["fixed"].get(t) for t in ("direct", "weft", "nginx"))
    added, nadded = w["p99"] - d["p99"], n["p99"] - d["p99"]
    rows.append((f"p99 added, one proxy, open loop at {one['rate']} rps",
                 "≤ nginx's p99 added",
                 f"{added:+.3f} ms (nginx {nadded:+.3f})",
                 verdict(added <= nadded, d, w, n)))
else:
    rows.append(("p99 added, one proxy, open loop", "≤ nginx's p99 added", "-", "not run"))

mtls = tables("weft2hop-mtls")
if mtls and "wrk" in mtls:
    m = mtls["wrk"]["weft2hop-mtls"]
    rows.append(("CPU per request, two proxies, mTLS hop, L7 + metrics (saturation)",
                 "≤ 30 µs both together", f"{fmt(m['cpu'])} µs", verdict(m["cpu"] <= 30, m)))
else:
    rows.append(("CPU per request, two proxies, mTLS", "≤ 30 µs both together", "-", "not run"))
if mtls and "fixed" in mtls:
    d, m = mtls["fixed"]["direct"], mtls["fixed"]["weft2hop-mtls"]
    p50, p99 = m["p50"] - d["p50"], m["p99"] - d["p99"]
    at_rate = mtls["rate"] == 1000
    rows.append((f"added latency, two proxies with mTLS, open loop at {mtls['rate']} rps",
                 "p50 ≤ 0.08 ms, p99 ≤ 0.15 ms (at 1,000 rps)",
                 f"p50 {p50:+.3f} ms, p99 {p99:+.3f} ms",
                 verdict(p50 <= 0.08 and p99 <= 0.15, d, m) + ("" if at_rate else " (not at 1,000 rps: RATE=1000)")))
else:
    rows.append(("added latency, two proxies with mTLS", "p50 ≤ 0.08 ms, p99 ≤ 0.15 ms", "-", "not run"))

for name, label in (("weft", "1 route"), ("weft100", "100 routes"), ("weft1000", "1,000 routes")):
    t = tables(name)
    r = t and t.get("wrk", {}).get(name)
    rows.append((f"RSS under load, one proxy, {label}", "≤ 10 MB",
                 "-" if not r else f"{fmt(r['rss'])} MB",
                 "not run (ONLY=routes)" if not r and name != "weft" else verdict(None if not r else r["rss"] <= 10, r)))

rows.append(("resolve() with 100 routes", "< 1 µs, no allocation on a match",
             "cargo bench -p weft-api --bench resolve; test resolve_alloc", "not run here"))
rows.append(("new mTLS connections per second per core (server)", "≥ 3,000",
             "cargo bench -p weft-proxy --bench mtls", "not run here"))

print("## Targets (issue 12, BENCHMARKS.md)\n")
print("| figure | target | measured | |")
print("|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
