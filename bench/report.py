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
from statistics import median

CELL = ("size", "rcpts", "reuse")


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.setdefault("round", 1)  # files written before rounds existed
        for key in ("sessions", "size", "rcpts", "reuse", "messages", "round", "msg_per_s", "cpu_us_per_msg",
                    "peak_rss_kib"):
            row[key] = int(float(row[key]))
    return rows


def ratios(group, server, base):
    """This server's msg/s over the base's, round by round (the same round's
    runs sat next to each other in time); `base` picks the base's rate of a
    round from that round's rows, or None."""
    by_round = defaultdict(list)
    for row in group:
        by_round[row["round"]].append(row)
    found = []
    for rows in by_round.values():
        mine = next((r["msg_per_s"] for r in rows if r["server"] == server), None)
        theirs = base(rows)
        if mine is not None and theirs:
            found.append(mine / theirs)
    return found


def sink_rate(rows):
    return next((r["msg_per_s"] for r in rows if r["server"] == "smtp-sink"), None)


def best_haraka_rate(rows):
    return max((r["msg_per_s"] for r in rows if r["server"].startswith("haraka")), default=None)


def summarise(rows):
    """One row per server and cell: medians of the rounds (peak RSS: the
    highest), and the median ratios to smtp-sink and to the better Haraka
    with their range across rounds."""
    by_cell = defaultdict(list)
    for row in rows:
        by_cell[tuple(row[k] for k in CELL) + (row["sessions"],)].append(row)
    summary = []
    for (size, rcpts, reuse, sessions), group in sorted(by_cell.items()):
        for server in dict.fromkeys(r["server"] for r in group):
            mine = [r for r in group if r["server"] == server]
            summary.append({
                "server": server, "sessions": sessions, "size": size, "rcpts": rcpts, "reuse": reuse,
                "messages": mine[0]["messages"], "rounds": len(mine),
                "msg_per_s": round(median(r["msg_per_s"] for r in mine)),
                "cpu_us_per_msg": round(median(r["cpu_us_per_msg"] for r in mine)),
                "peak_rss_kib": max(r["peak_rss_kib"] for r in mine),
                "x_sink": ratios(group, server, sink_rate),
                "x_haraka": ratios(group, server, best_haraka_rate),
            })
    return summary


def ratio_text(found):
    if not found:
        return "-"
    if len(found) == 1:
        return f"{found[0]:.2f}"
    return f"{median(found):.2f} ({min(found):.2f}-{max(found):.2f})"


def table(summary):
    by_cell = defaultdict(list)
    for row in summary:
        by_cell[(row["size"], row["rcpts"], row["reuse"], row["sessions"])].append(row)
    for (size, rcpts, reuse, sessions), group in by_cell.items():
        print(f"\n{size // 1024} KiB, {rcpts} recipient(s), connections {'reused' if reuse else 'not reused'}, "
              f"{sessions} session(s), {group[0]['messages']} messages, median of {group[0]['rounds']} round(s)")
        print(f"  {'server':<16}{'msg/s':>8}{'cpu-us/msg':>12}{'peak RSS KiB':>14}{'x sink':>20}{'x Haraka':>20}")
        for row in group:
            rss = row["peak_rss_kib"] or "-"  # none measured (the native storage row)
            print(f"  {row['server']:<16}{row['msg_per_s']:>8}{row['cpu_us_per_msg']:>12}{rss:>14}"
                  f"{ratio_text(row['x_sink']):>20}{ratio_text(row['x_haraka']):>20}")


def scaling(rows):
    """Each server's msg/s at the most sessions over its msg/s at the fewest,
    round by round (the maildir target: 100 sessions against one)."""
    by_cell = defaultdict(list)
    for row in rows:
        by_cell[tuple(row[k] for k in CELL)].append(row)
    for (size, rcpts, reuse), group in sorted(by_cell.items()):
        counts = sorted({r["sessions"] for r in group})
        if len(counts) < 2:
            continue
        few, many = counts[0], counts[-1]
        print(f"\nScaling, {size // 1024} KiB, {rcpts} recipient(s), connections {'reused' if reuse else 'not reused'}: "
              f"msg/s at {many} sessions over {few}")
        for server in dict.fromkeys(r["server"] for r in group):
            rate = {(r["round"], r["sessions"]): r["msg_per_s"] for r in group if r["server"] == server}
            found = [rate[(n, many)] / rate[(n, few)] for n in {n for n, _ in rate}
                     if rate.get((n, few)) and (n, many) in rate]
            print(f"  {server:<16}{ratio_text(found):>20}")


def chart(summary, path):
    """Median msg/s against sessions, 5 KiB, one recipient, reused connections."""
    try:
        import matplotlib
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in summary if (r["size"], r["rcpts"], r["reuse"]) == (5120, 1, 1)]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    for server in dict.fromkeys(r["server"] for r in chosen):
        points = sorted((r["sessions"], r["msg_per_s"]) for r in chosen if r["server"] == server)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=server)
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["sessions"] for r in chosen}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("concurrent smtp-source sessions")
    ax.set_ylabel("messages per second")
    rounds = max((r["rounds"] for r in chosen), default=1)
    ax.set_title(f"5 KiB messages, 1 recipient, reused connections (median of {rounds} rounds, 2 cores)",
                 fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--chart", metavar="PNG")
    args = parser.parse_args()
    rows = load(args.csv)
    summary = summarise(rows)
    table(summary)
    scaling(rows)
    if args.chart:
        chart(summary, args.chart)


if __name__ == "__main__":
    main()
