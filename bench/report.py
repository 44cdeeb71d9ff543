#!/usr/bin/env python3
"""Prints a bench/run.sh result file (CSV) as a table with ratios to smtp-sink
and Haraka, and optionally draws msg/s against sessions as a PNG.

    bench/report.py bench/.cache/matrix.csv
    bench/report.py bench/.cache/matrix.csv --chart docs/performance.png
"""

import argparse
import csv
import subprocess
import sys
from collections import defaultdict

CELL = ("size", "rcpts", "reuse")


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("sessions", "size", "rcpts", "reuse", "messages", "msg_per_s", "cpu_us_per_msg", "peak_rss_kib"):
            row[key] = int(float(row[key]))
    return rows


def table(rows):
    by_cell = defaultdict(list)
    for row in rows:
        by_cell[tuple(row[k] for k in CELL) + (row["sessions"],)].append(row)
    for (size, rcpts, reuse, sessions), group in sorted(by_cell.items()):
        print(f"\n{size // 1024} KiB, {rcpts} recipient(s), connections {'reused' if reuse else 'not reused'}, "
              f"{sessions} session(s), {group[0]['messages']} messages")
        sink = next((r for r in group if r["server"] == "smtp-sink"), None)
        haraka = max((r for r in group if r["server"].startswith("haraka")), key=lambda r: r["msg_per_s"], default=None)
        print(f"  {'server':<16}{'msg/s':>8}{'cpu-us/msg':>12}{'peak RSS KiB':>14}{'x sink':>8}{'x Haraka':>10}")
        for row in group:
            vs_sink = f"{row['msg_per_s'] / sink['msg_per_s']:.2f}" if sink else "-"
            vs_haraka = f"{row['msg_per_s'] / haraka['msg_per_s']:.2f}" if haraka else "-"
            print(f"  {row['server']:<16}{row['msg_per_s']:>8}{row['cpu_us_per_msg']:>12}{row['peak_rss_kib']:>14}"
                  f"{vs_sink:>8}{vs_haraka:>10}")


def chart(rows, path):
    """msg/s against sessions, 5 KiB, one recipient, reused connections."""
    try:
        import matplotlib
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in rows if (r["size"], r["rcpts"], r["reuse"]) == (5120, 1, 1)]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for server in dict.fromkeys(r["server"] for r in chosen):
        points = sorted((r["sessions"], r["msg_per_s"]) for r in chosen if r["server"] == server)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=server)
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["sessions"] for r in chosen}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("concurrent smtp-source sessions")
    ax.set_ylabel("messages per second")
    ax.set_title("5 KiB messages, 1 recipient, reused connections (one run, 2 cores)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--chart", metavar="PNG")
    args = parser.parse_args()
    rows = load(args.csv)
    table(rows)
    if args.chart:
        chart(rows, args.chart)


if __name__ == "__main__":
    main()
