#!/usr/bin/env python3
"""Groups a `perf report --no-children --sort symbol --stdio` listing (stdin) of the gateway into
the categories BENCHMARKS.md uses, self time in % of all samples; then the top entries."""
import collections
import re
import sys

CATEGORIES = [
    ("kernel (UDP send/receive, syscalls, scheduler)", r"\[k\]"),
    ("str0m bandwidth estimation / TWCC / pacer", r"str0m::(bwe_|pacer)|[Tt]wcc"),
    ("SCTP / DTLS (data channels)", r"sctp_proto|dimpl"),
    ("SRTP (aws-lc)", r"aws_lc|aead_aes|aes_gcm|gcm_"),
    ("str0m other (streams, session, timers, queues, RTX cache)", r"str0m::"),
    ("switchboard (core + gateway)", r"switchboard"),
    ("memcpy / memmove", r"mem(move|cpy|set)"),
    ("malloc / free", r"malloc|free|_int_|realloc"),
    ("other (std, tokio, hashing, …)", r"."),
]
entries = []
for line in sys.stdin:
    m = re.match(r"\s+([0-9.]+)%\s+(.*?)\s*(-\s+-\s*)?$", line)
    if m:
        entries.append((float(m.group(1)), m.group(2)))
totals = collections.Counter()
for pct, sym in entries:
    for name, rx in CATEGORIES:
        if re.search(rx, sym):
            totals[name] += pct
            break
for name, _ in CATEGORIES:
    print(f"{totals[name]:5.1f} %  {name}")
print()
for pct, sym in entries[:25]:
    print(f"{pct:5.2f} %  {sym}")
