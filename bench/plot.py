#!/usr/bin/env python3
"""Turns benchmark JSON lines (../shared/BENCHMARKS.md record format) into one PNG: tokens/s
per scenario/type/phase/policy next to its roofline, with the ratio written on each bar.

Usage: bench/plot.py bench.jsonl [more.jsonl ...] -o bench.png
Needs matplotlib (Debian: python3-matplotlib; present on the GPU machine)."""
import argparse
import json

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("-o", "--out", default="bench.png")
    args = ap.parse_args()
    rows = []
    for path in args.files:
        for line in open(path):
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if "tokens_per_s" in r and "roofline_tokens_per_s" in r:
                rows.append(r)
    if not rows:
        raise SystemExit("no records with tokens_per_s and roofline_tokens_per_s")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"{r['scenario']}\n{r['type']} {r['phase']}\n{r.get('policy', '')}" for r in rows]
    got = [r["tokens_per_s"] for r in rows]
    roof = [r["roofline_tokens_per_s"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4.5))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], roof, width=0.4, label="roofline", color="#cccccc")
    ax.bar([x + 0.2 for x in xs], got, width=0.4, label="measured", color="#3366aa")
    for x, r in zip(xs, rows):
        ax.text(x + 0.2, r["tokens_per_s"], f"{r['ratio_to_roofline']:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("tokens/s (log)")
    ax.set_title("Strata: measured vs roofline (ratio on bars)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out} ({len(rows)} records)")

if __name__ == "__main__":
    main()
