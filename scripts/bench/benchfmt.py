"""Formatting shared by the benchmark summaries (summarize.py, summarize-workers.py): a value or
"-", a median with its range, and loading a result directory's JSON reports."""
import json
import os
import re
import statistics


def fmt(v, spec=".0f"):
    return "-" if v is None else format(v, spec)


def spread(vals, spec=".0f", unit=""):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return f"{format(statistics.median(vals), spec)}{unit} ({format(min(vals), spec)}–{format(max(vals), spec)})"


def load_runs(out, pattern, key):
    """The JSON reports in directory `out` whose names match the regex `pattern`, keyed by
    key(match); a report that does not parse (a failed run) maps to None."""
    runs = {}
    for name in sorted(os.listdir(out)):
        m = re.match(pattern, name)
        if not m:
            continue
        try:
            with open(os.path.join(out, name)) as f:
                runs[key(m)] = json.load(f)
        except (json.JSONDecodeError, OSError):
            runs[key(m)] = None
    return runs
