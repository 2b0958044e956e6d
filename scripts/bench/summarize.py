#!/usr/bin/env python3
"""Summarizes a scripts/bench/e2e.sh result directory: per scenario and round, each SFU's knee
(received packets per CPU-second of the SFU, subscribers, loss, lateness, join time, RSS) and the
ratio Switchboard / chat per round, then the median and range of each over rounds; the first step
past the knee (delivery, audio delivery, one-way delay p50/p99 of audio and video) and the SFU's
RSS growth per added Session below the knee; for the idle scenario, the RSS growth per idle
Session. Markdown."""
import os
import sys

from benchfmt import fmt, load_runs, spread

out = sys.argv[1]
runs = load_runs(out, r"r(\d+)-(switchboard|chat)-(.+)\.json$", lambda m: (m.group(3), int(m.group(1)), m.group(2)))


def pair(a, b):
    return f"{fmt(a)} / {fmt(b)}"


def past_and_memory(scenario):
    """The first overloaded step of each run, and RSS per added Session below the knee."""
    print(f"\nPast the knee (the first overloaded step) and memory, {scenario}:\n")
    print("| round | SFU | knee | past the knee: subscribers | delivered % | audio delivered % | late % | "
          "audio delay p50 / p99 ms | video delay p50 / p99 ms | SFU RSS KiB per added Session below the knee |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (scen, rnd, sfu), rep in sorted(runs.items()):
        if scen != scenario or not rep:
            continue
        k, x = rep.get("knee") or {}, rep.get("past_knee") or {}
        print(f"| {rnd} | {sfu} | {k.get('subscribers', '-')} | {x.get('subscribers', 'none reached' if 'past_knee' in rep else '-')} | "
              f"{fmt(x.get('delivered_pct'), '.1f')} | {fmt(x.get('audio_delivered_pct'), '.1f')} | "
              f"{fmt(x.get('late_pct'), '.1f')} | {pair(x.get('audio_delay_p50_ms'), x.get('audio_delay_p99_ms'))} | "
              f"{pair(x.get('video_delay_p50_ms'), x.get('video_delay_p99_ms'))} | {fmt(rep.get('rss_kib_per_session'))} |")
    print()
    for sfu in ("switchboard", "chat"):
        reps = [r for (s, _, f), r in runs.items() if s == scenario and f == sfu and r]
        if not reps:
            continue
        xs = [r["past_knee"] for r in reps if r.get("past_knee")]
        print(f"- {sfu}: past the knee, audio delay p99 {spread([x.get('audio_delay_p99_ms') for x in xs])} ms, "
              f"video p99 {spread([x.get('video_delay_p99_ms') for x in xs])} ms, audio delivered "
              f"{spread([x.get('audio_delivered_pct') for x in xs], '.1f')} %; RSS per added Session below the knee "
              f"{spread([r.get('rss_kib_per_session') for r in reps])} KiB")


def idle():
    print("\n### idle\n")
    print("| round | Sessions (last step) | connected of the last step's new ones | SFU RSS MiB | RSS KiB per added idle Session, per step | median |")
    print("|---|---|---|---|---|---|")
    meds = []
    for (scen, rnd, sfu), rep in sorted(runs.items()):
        if scen != "idle" or not rep or not rep.get("steps"):
            continue
        last = rep["steps"][-1]
        slopes = ", ".join(fmt(s.get("rss_kib_per_added_session")) for s in rep["steps"])
        rss = last.get("sfu_rss_kib")
        meds.append(rep.get("rss_kib_per_session"))
        print(f"| {rnd} | {last['subscribers']} | {last['connected']} | {fmt(rss and rss / 1024, '.0f')} | {slopes} | "
              f"{fmt(rep.get('rss_kib_per_session'))} |")
    print(f"\n- SFU RSS per idle Session: {spread(meds)} KiB (median over rounds of each run's median slope)")


print(open(os.path.join(out, "machine.txt")).read().strip().replace("\n", "  \n"))
for scenario in sorted({k[0] for k in runs}):
    if scenario == "idle":
        idle()
        continue
    print(f"\n### {scenario}\n")
    print("| round | SFU | knee subscribers | packets/s | SFU CPU | packets per SFU CPU-second | loss % | late % | join p50 / p95 ms | SFU RSS MiB | loadgen CPU (µs/packet) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    per = {"switchboard": [], "chat": []}
    ratios = []
    equal = []  # ratio at the first step, where both carry the same subscribers
    for rnd in sorted({k[1] for k in runs if k[0] == scenario}):
        kv = {}
        for sfu in ("switchboard", "chat"):
            kv[sfu] = None
            if (scenario, rnd, sfu) not in runs:
                continue  # not run (SYSTEMS)
            rep = runs[(scenario, rnd, sfu)]
            k = rep and rep.get("knee")
            if not k:
                print(f"| {rnd} | {sfu} | no knee (failed or overloaded at the first step) | | | | | | | | |")
                kv[sfu] = None
                continue
            kv[sfu] = k.get("packets_per_cpu_s")
            per[sfu].append(kv[sfu])
            rss = k.get("sfu_rss_kib")
            print(f"| {rnd} | {sfu} | {k['subscribers']} | {fmt(k['packets_per_s'])} | {fmt(k.get('sfu_cpu'), '.2f')} | "
                  f"{fmt(kv[sfu])} | {k['loss_pct']:.2f} | {k['late_pct']:.2f} | "
                  f"{fmt(k.get('join_p50_ms'))} / {fmt(k.get('join_p95_ms'))} | {fmt(rss and rss / 1024, '.0f')} | {k['loadgen_cpu']:.2f} ({fmt(k.get('loadgen_us_per_packet'), '.1f')}) |")
        if kv["switchboard"] and kv["chat"]:
            ratios.append(kv["switchboard"] / kv["chat"])
        first = [runs.get((scenario, rnd, sfu)) for sfu in ("switchboard", "chat")]
        if all(r and r.get("steps") for r in first):
            a, b = (r["steps"][0] for r in first)
            if a["subscribers"] == b["subscribers"] and a.get("packets_per_cpu_s") and b.get("packets_per_cpu_s"):
                equal.append((a["subscribers"], a["packets_per_cpu_s"] / b["packets_per_cpu_s"]))
    print()
    print(f"- Switchboard: {spread(per['switchboard'])} packets per SFU CPU-second (median, range)")
    print(f"- str0m chat: {spread(per['chat'])}")
    print(f"- ratio Switchboard / chat, per round: {', '.join(format(r, '.2f') for r in ratios) or '-'}; "
          f"median {spread(ratios, '.2f', '×')}")
    if equal:
        print(f"- ratio at equal load (first step, {equal[0][0]} subscribers), per round: "
              f"{', '.join(format(r, '.2f') for _, r in equal)}; median {spread([r for _, r in equal], '.2f', '×')}")
    past_and_memory(scenario)
