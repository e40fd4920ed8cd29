"""bench/serve/run's report: medians of the raw TSV as Markdown for
docs/BENCHMARKS.md, the ratios to the peer, and the targets.

    python3 report.py RAW.tsv      (CONNS, LATENCY_MS, KNEE_MS, LABELS from the environment)

Raw columns: case (latency | zero), server, clients, rep, req/s, p99 ms,
CPU us/req (per request written), peak RSS KiB, upstream/req (NA for the
ceilings and the floor), socket errors, non-2xx, requests (answered within
the run), sent. The floor ("sim", latency case only) is wrk straight at the
simulator: its CPU is the simulator's.
"""
import os
import statistics
import sys
from collections import defaultdict

# The targets (docs/BENCHMARKS.md, "Serve"): at CONNS clients with the added
# latency, eidkit serve answers at least this many req/s with p99 below
# TARGET_P99_MS, uses at most a third of the peer's CPU per request, and at
# saturation serves at least twice the peer's highest req/s.
TARGET_RPS = 4000
TARGET_P99_MS = 300
TARGET_CPU_RATIO = 1 / 3
TARGET_SAT_RATIO = 2

raw = sys.argv[1]
conns = int(os.environ["CONNS"])
latency_ms = os.environ["LATENCY_MS"]
knee_ms = float(os.environ["KNEE_MS"])
with_ladder = os.environ.get("LADDER", "1") != "0"  # 0: CONNS clients only, no saturation figures
labels = dict(line.split("=", 1) for line in os.environ["LABELS"].splitlines() if "=" in line)

header, rows = [], []
for line in open(raw, encoding="utf-8"):
    line = line.rstrip("\n")
    if line.startswith("# case"):
        continue
    if line.startswith("#"):
        header.append(line)
        continue
    f = line.split("\t")
    rows.append({"case": f[0], "server": f[1], "clients": int(f[2]), "rep": int(f[3]),
                 "rps": float(f[4]), "p99": float(f[5]), "cpu": float(f[6]), "rss": int(f[7]),
                 "upstream": None if f[8] == "NA" else float(f[8]),
                 "failed": int(f[9]) + int(f[10]), "requests": int(f[11]), "sent": int(f[12])})

order = [s for s in ("sqlite", "redis", "openresty", "openresty2", "peer", "bare", "sim", "mhd", "lua")
         if any(r["server"] == s for r in rows)]
serves = [s for s in ("sqlite", "redis", "openresty", "openresty2") if s in order]
CEILINGS = ("mhd", "lua")


def ceiling_of(server):
    """The fixed-answer server of the same host: nginx's for OpenResty."""
    if server.startswith("openresty") and "lua" in order:
        return "lua"
    return "mhd" if "mhd" in order else None


def med(values):
    values = [v for v in values if v is not None]  # the ceilings have no upstream count
    return statistics.median(values) if values else None


def num(v, digits=0):
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


groups = defaultdict(list)
for r in rows:
    groups[(r["case"], r["server"], r["clients"])].append(r)


def stat(case, server, clients, key):
    g = groups.get((case, server, clients), [])
    return med([r[key] for r in g])


def runs(case, server, clients):
    return " · ".join(f"{r['rps']:,.0f}" for r in groups.get((case, server, clients), []))


def ok(r):
    return r["p99"] <= knee_ms and r["failed"] == 0


# Saturation, per run: the highest req/s among the client counts whose p99
# stayed at or under the knee with nothing failed; the knee is the smallest
# count that did not (none: not reached within MAX_CONNS).
sat = {}
for s in order:
    if s == "sim":  # the floor runs at CONNS only
        continue
    per_rep = []
    for rep in sorted({r["rep"] for r in rows if r["server"] == s and r["case"] == "latency"}):
        ladder = sorted((r for r in rows if r["server"] == s and r["case"] == "latency" and r["rep"] == rep),
                        key=lambda r: r["clients"])
        good = [r for r in ladder if ok(r)]
        best = max(good, key=lambda r: r["rps"]) if good else None
        knee = min((r["clients"] for r in ladder if not ok(r)), default=None)
        per_rep.append((best, knee))
    if per_rep:
        sat[s] = {
            # A run with no count within the knee counts 0; none in any run: no figure.
            "rps": med([b["rps"] if b else 0 for b, _ in per_rep]) if any(b for b, _ in per_rep) else None,
            "cpu": med([b["cpu"] for b, _ in per_rep if b]),
            "at": ", ".join(f"{b['clients']:,}" if b else "—" for b, _ in per_rep),
            "knee": ", ".join(f"{k:,}" if k else "none" for _, k in per_rep),
        }

print("\n".join(header))
print()
print(f"### + {latency_ms} ms on every GetEidResult: {conns:,} clients, then doubling up to the knee "
      "(halving down to it when it is below)\n")
print("| server | clients | req/s | p99 ms | CPU µs/req | peak RSS MiB | upstream calls/req | failed | runs (req/s) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
for s in order:
    for c in sorted({k[2] for k in groups if k[0] == "latency" and k[1] == s}):
        g = groups[("latency", s, c)]
        print(f"| {labels.get(s, s)} | {c:,} | {num(stat('latency', s, c, 'rps'))} | "
              f"{num(stat('latency', s, c, 'p99'), 1)} | {num(stat('latency', s, c, 'cpu'), 1)} | "
              f"{num(stat('latency', s, c, 'rss') / 1024, 0)} | {num(stat('latency', s, c, 'upstream'), 3)} | "
              f"{sum(r['failed'] for r in g)} | {runs('latency', s, c)} |")
print()
print(f"### No added latency, {conns:,} clients\n")
print("| server | req/s | of its ceiling | p99 ms | CPU µs/req | peak RSS MiB | upstream calls/req | failed | runs (req/s) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
for s in order:
    if ("zero", s, conns) not in groups:
        continue
    rps = stat("zero", s, conns, "rps")
    ceiling = None if s in CEILINGS else stat("zero", ceiling_of(s), conns, "rps")
    of = f"{rps / ceiling:.3f}" if ceiling else "—"
    g = groups[("zero", s, conns)]
    print(f"| {labels.get(s, s)} | {num(rps)} | {of} | {num(stat('zero', s, conns, 'p99'), 1)} | "
          f"{num(stat('zero', s, conns, 'cpu'), 1)} | {num(stat('zero', s, conns, 'rss') / 1024, 0)} | "
          f"{num(stat('zero', s, conns, 'upstream'), 3)} | {sum(r['failed'] for r in g)} | {runs('zero', s, conns)} |")
print()
if with_ladder:
    print(f"### Saturation (+ {latency_ms} ms): the highest req/s with p99 ≤ {knee_ms:g} ms and nothing failed\n")
    print("| server | median highest req/s (— : none within the knee) | at clients (per run) | CPU µs/req there | "
          "knee at clients (per run) |")
    print("|---|---:|---|---:|---|")
    for s in order:
        if s in sat:
            print(f"| {labels.get(s, s)} | {num(sat[s]['rps'])} | {sat[s]['at']} | {num(sat[s]['cpu'], 1)} | "
                  f"{sat[s]['knee']} |")

if serves:
    print()
    print("### Targets\n")
    print("| target | " + " | ".join(labels.get(s, s) for s in serves) + " |")
    print("|---|" + "---|" * len(serves))

    def verdict(good):
        return "met" if good else "MISSED"

    def row(name, cell):
        print(f"| {name} | " + " | ".join(cell(s) for s in serves) + " |")

    def t_rps(s):
        v = stat("latency", s, conns, "rps")
        return "—" if v is None else f"{v:,.0f}: {verdict(v >= TARGET_RPS)}"

    def t_p99(s):
        v = stat("latency", s, conns, "p99")
        return "—" if v is None else f"{v:,.1f} ms: {verdict(v < TARGET_P99_MS)}"

    def t_cpu(case):
        def cell(s):
            a, b = stat(case, s, conns, "cpu"), stat(case, "peer", conns, "cpu")
            if a is None or not b:
                return "— (no peer in this run)" if "peer" not in order else "—"
            text = f"{a:,.1f} / {b:,.1f} µs = {a / b:.2f}"
            return text + (f": {verdict(a / b <= TARGET_CPU_RATIO)}" if case == "latency" else "")
        return cell

    def t_sat(s):
        a, b = sat.get(s, {}).get("rps"), sat.get("peer", {}).get("rps")
        if a is None or not b:
            return "— (no peer in this run)" if "peer" not in order else "—"
        return f"{a:,.0f} / {b:,.0f} = {a / b:.2f}×: {verdict(a / b >= TARGET_SAT_RATIO)}"

    row(f"≥ {TARGET_RPS:,} req/s at {conns:,} clients, + {latency_ms} ms", t_rps)
    row(f"p99 < {TARGET_P99_MS} ms there", t_p99)
    # A server's figure above a reference server's at CONNS clients + LATENCY_MS.
    def t_above(key, ref, unit, missing):
        def cell(s):
            a, b = stat("latency", s, conns, key), stat("latency", ref, conns, key)
            if a is None or b is None:
                return f"— (no {missing} in this run)" if ref not in order else "—"
            return f"{a:,.1f} − {b:,.1f} = {a - b:,.1f} {unit}"
        return cell

    row("p99 above the floor's (the simulator alone) there (reported)", t_above("p99", "sim", "ms", "floor"))
    row(f"CPU per request ≤ 1/3 of the peer's there", t_cpu("latency"))
    row("CPU per request against the peer's, no added latency (reported)", t_cpu("zero"))
    if with_ladder:
        row(f"saturation: ≥ {TARGET_SAT_RATIO}× the peer's highest req/s", t_sat)

    # OpenResty against eidkit serve on the same (Redis) ledger and load.
    def t_vs_serve(key, unit):
        def cell(s):
            if not s.startswith("openresty") or "redis" not in order:
                return "—"
            a, b = stat("latency", s, conns, key), stat("latency", "redis", conns, key)
            if a is None or not b:
                return "—"
            return f"{a:,.0f} / {b:,.0f}{unit} = {a / b:.2f}"
        return cell

    if any(s.startswith("openresty") for s in serves):
        row(f"req/s against eidkit serve (Redis) at {conns:,} clients (reported)", t_vs_serve("rps", ""))
        row("CPU per request against eidkit serve (Redis) there (reported)", t_vs_serve("cpu", " µs"))

    # The bare parts (bench/serve/bare.c): what is left of a request's CPU
    # once libmicrohttpd, libcurl, signing and the kernel under them are
    # paid is eidkit's own work (gateway, flow, policy, ledger, log, metrics).
    row("CPU per request above the bare parts' there: eidkit's own work (reported)",
        t_above("cpu", "bare", "µs", "bare server"))

if "bare" in order and "peer" in order:
    a, b = stat("latency", "bare", conns, "cpu"), stat("latency", "peer", conns, "cpu")
    if a is not None and b:
        print()
        print(f"The bare parts alone (libmicrohttpd and the C client on one loop, no eidkit work) took "
              f"{a:,.1f} µs a request at {conns:,} clients + {latency_ms} ms: {a / b:.2f} of the peer's {b:,.1f}.")
