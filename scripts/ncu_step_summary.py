#!/usr/bin/env python3
"""Sums an `ncu --csv --page raw --metrics gpu__time_duration.sum` log per kernel name.

Usage: ncu_step_summary.py LOG.csv   (gpu-machine.sh's ncu-step writes one per type)
Prints kernels by total time: count, total us, mean us; then the step's kernel count and sum.
"""
import csv
import re
import sys
from collections import defaultdict


def short(name):
    name = re.sub(r"\(.*", "", name)         # drop the argument list
    name = re.sub(r"^void ", "", name)
    return name[:90]


def main(path):
    lines = [l for l in open(path, errors="replace") if l.startswith('"')]
    rows = list(csv.DictReader(lines))
    total = defaultdict(float)
    count = defaultdict(int)
    for r in rows:
        v = r.get("gpu__time_duration.sum", "")
        try:
            ns = float(v.replace(",", ""))
        except ValueError:
            continue  # the units row
        k = short(r.get("Kernel Name", "?"))
        total[k] += ns
        count[k] += 1
    s = sum(total.values())
    for k in sorted(total, key=total.get, reverse=True)[:20]:
        print(f"{count[k]:5d} {total[k] / 1e3:9.1f} us {total[k] / count[k] / 1e3:8.2f} us/each  {k}")
    print(f"kernels {sum(count.values())}, sum of durations {s / 1e3:.1f} us")


if __name__ == "__main__":
    main(sys.argv[1])
