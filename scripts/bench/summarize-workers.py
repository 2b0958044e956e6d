#!/usr/bin/env python3
"""Summarizes a scripts/bench/workers.sh result directory: per round, the knee of the gateway with
one Worker and with two (subscribers, received packets/s, the gateway's CPU, packets per SFU
CPU-second, how many Worker sockets carried the Sessions, the load generator's CPU), the ratios
two / one per round, and their median and range over rounds. Markdown."""
import os
import sys

from benchfmt import fmt, load_runs, spread

out = sys.argv[1]
runs = load_runs(out, r"r(\d+)-w(\d+)\.json$", lambda m: (int(m.group(1)), int(m.group(2))))


print(open(os.path.join(out, "machine.txt")).read().strip().replace("\n", "  \n"))
print()
print("| round | Workers | knee subscribers | Worker sockets used | packets/s | SFU CPU (cores) | "
      "packets per SFU CPU-second | late % | loadgen CPU | first step past the knee: SFU CPU |")
print("|---|---|---|---|---|---|---|---|---|---|")
knee_ratio, cpu_ratio = [], []
for rnd in sorted({r for r, _ in runs}):
    k = {}
    for w in (1, 2):
        rep = runs.get((rnd, w))
        kn = rep and rep.get("knee")
        if not kn:
            print(f"| {rnd} | {w} | no knee (failed or overloaded at the first step) | | | | | | | |")
            continue
        k[w] = kn
        past = rep.get("past_knee") or {}
        print(f"| {rnd} | {w} | {kn['subscribers']} | {kn.get('sfu_sockets', '-')} | {fmt(kn['packets_per_s'])} | "
              f"{fmt(kn.get('sfu_cpu'), '.2f')} | {fmt(kn.get('packets_per_cpu_s'))} | {kn['late_pct']:.2f} | "
              f"{kn['loadgen_cpu']:.2f} | {fmt(past.get('sfu_cpu'), '.2f')} |")
    if 1 in k and 2 in k:
        knee_ratio.append(k[2]["packets_per_s"] / k[1]["packets_per_s"])
        a, b = k[2].get("packets_per_cpu_s"), k[1].get("packets_per_cpu_s")
        if a and b:
            cpu_ratio.append(a / b)
print()
print(f"- packets/s at the knee, 2 Workers / 1, per round: {', '.join(format(r, '.2f') for r in knee_ratio) or '-'}; "
      f"median {spread(knee_ratio, '.2f', '×')}")
print(f"- packets per SFU CPU-second, 2 Workers / 1, per round: {', '.join(format(r, '.2f') for r in cpu_ratio) or '-'}; "
      f"median {spread(cpu_ratio, '.2f', '×')}")
