#!/usr/bin/env python3
"""Side-by-side table, ratios and plots of `plexus bench --json` reports.

    report.py table RESULT.json... [--compare A:B ...]   print one row per run, then the ratios A/B
    report.py plot  RESULT.json... --out FILE.png        latency percentiles and throughput over time

A run is named by its report's label and its rate: `max` when the workload had producerRate 0, else the
target rate. `--compare plexus:jetstream` divides plexus's figures by jetstream's, phase by phase (max
rate, and each one's own half-of-max rate). The table needs only the standard library; the plot needs
matplotlib (scripts/bench-deps installs it into .build/bench-venv).
"""
import argparse
import json
import sys

PERCENTILES = [("p50", "p50"), ("p75", "p75"), ("p95", "p95"), ("p99", "p99"), ("p99.9", "p99_9"),
               ("p99.99", "p99_99"), ("max", "max")]


def load(paths):
    reports = []
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        report["_phase"] = "max" if report["workload"]["producerRate"] == 0 else "half"
        reports.append(report)
    order = {"max": 0, "half": 1}
    return sorted(reports, key=lambda r: (order[r["_phase"]], r["label"]))


def micros(value):
    """157 µs, 1.3 ms, 1,234 ms."""
    if value < 1000:
        return f"{value:.0f}µs"
    if value < 100_000:
        return f"{value / 1000:.1f}ms"
    return f"{value / 1000:,.0f}ms"


def rate(value):
    return f"{value:,.0f}/s"


def run_name(report):
    target = "max" if report["_phase"] == "max" else f"{report['workload']['producerRate']:,}/s"
    return f"{report['label']} @ {target}"


def consume_trend(report):
    """Consume rate in the last third of the measured window over the first third (None if too short).

    A consumer that falls behind a growing backlog shows as a trend well below 1: its rate collapses while
    the publisher goes on (the per-second series is also plotted)."""
    warmup = report["workload"]["warmupSeconds"]
    end = warmup + report["workload"]["durationSeconds"]
    measured = [p["consumed"] for p in report.get("series", []) if warmup <= p["second"] < end]
    third = len(measured) // 3
    if third < 1:
        return None
    first, last = sum(measured[:third]) / third, sum(measured[-third:]) / third
    return last / first if first else None


def table(reports, comparisons):
    header = ["run", "published", "consumed", "cons/pub", "cons trend", "pub p50", "pub p99", "pub p99.9",
              "pub max", "e2e p50", "e2e p99", "e2e p99.9", "e2e max", "errors"]
    rows = [header]
    collapses = []
    for r in reports:
        p, e = r["publishLatency"], r["endToEndLatency"]
        ratio = r["consumeRate"] / r["publishRate"] if r["publishRate"] else 0
        trend = consume_trend(r)
        trend_cell = "n/a" if trend is None else f"{trend:.2f}" + (" COLLAPSE" if trend < 0.5 else "")
        if (trend is not None and trend < 0.5) or ratio < 0.9:
            collapses.append(f"{run_name(r)}: consumed {ratio:.2f} of the publish rate"
                             + ("" if trend is None else f", consume rate in the last third {trend:.2f}× the first"))
        rows.append([run_name(r), rate(r["publishRate"]), rate(r["consumeRate"]), f"{ratio:.2f}", trend_cell,
                     micros(p["p50"]), micros(p["p99"]), micros(p["p99_9"]), micros(p["max"]),
                     micros(e["p50"]), micros(e["p99"]), micros(e["p99_9"]), micros(e["max"]),
                     str(r["publishErrors"] + r["consumerErrors"])])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(widths[i]) for i, cell in enumerate(row) if i > 0]
        print("  ".join(cells))
        if index == 0:
            print("  ".join("-" * w for w in widths))
    if reports:
        print(f"\nmachine: {reports[0]['machine']}; latencies from the send stamp, warmup excluded; "
              "'max' runs show queueing at saturation, the half-rate runs the latency under load.")
    print("cons/pub: consume rate over publish rate; cons trend: consume rate in the last third of the measured "
          "window over the first (below 0.5: COLLAPSE behind a backlog).")
    print("rows ending in -batched: the Plexus client coalesced concurrent publishes, up to 512 events per "
          "PUBLISH frame (BATCHED, not like for like); every other Plexus row: one event per frame.")
    for line in collapses:
        print(f"consumers fell behind: {line}")
    seen = set()
    for r in reports:
        if r["label"] not in seen and r.get("semantics"):
            seen.add(r["label"])
            print(f"what {r['label']} measures: {r['semantics']}")
        for note in r.get("notes", []):
            print(f"note: {run_name(r)}: {note}")
    if comparisons:
        print("\nratios (A / B; rate above 1 and latency below 1 favour A):")
    for comparison in comparisons:
        a, b = comparison.split(":", 1)
        for phase in ("max", "half"):
            ra = [r for r in reports if r["label"] == a and r["_phase"] == phase]
            rb = [r for r in reports if r["label"] == b and r["_phase"] == phase]
            if phase == "half" and not ra and a.endswith("-batched"):
                continue  # the batched rows run at max rate only
            if not ra or not rb:
                missing = a if not ra else b
                print(f"  {a} vs {b} ({phase}): no {missing} result, nothing compared")
                continue
            ra, rb = ra[0], rb[0]

            def ratio(x, y):
                return f"{x / y:.2f}×" if y else "n/a"

            print(f"  {a} vs {b} ({phase}): publish rate {ratio(ra['publishRate'], rb['publishRate'])}, "
                  f"consume rate {ratio(ra['consumeRate'], rb['consumeRate'])}, "
                  f"publish p99 {ratio(ra['publishLatency']['p99'], rb['publishLatency']['p99'])}, "
                  f"e2e p50 {ratio(ra['endToEndLatency']['p50'], rb['endToEndLatency']['p50'])}, "
                  f"e2e p99 {ratio(ra['endToEndLatency']['p99'], rb['endToEndLatency']['p99'])}")


def plot(reports, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    names = [name for name, _ in PERCENTILES]
    half = [r for r in reports if r["_phase"] == "half"] or reports
    for ax, key, title in ((axes[0][0], "publishLatency", "publish latency"),
                           (axes[0][1], "endToEndLatency", "end-to-end latency")):
        for r in half:
            values = [max(r[key][field], 1) / 1000 for _, field in PERCENTILES]
            ax.plot(names, values, marker="o", label=run_name(r))
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"{title}, half of each one's max rate")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    maxed = [r for r in reports if r["_phase"] == "max"] or reports
    for ax, key, title in ((axes[1][0], "published", "publish rate"), (axes[1][1], "consumed", "consume rate")):
        for r in maxed:
            series = r["series"]
            ax.plot([p["second"] for p in series], [p[key] for p in series], label=run_name(r))
        if maxed:
            ax.axvline(maxed[0]["workload"]["warmupSeconds"], color="grey", linestyle=":", label="end of warmup")
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("messages / s")
        ax.set_title(f"{title} over time, max rate")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    machine = reports[0]["machine"] if reports else ""
    fig.suptitle(f"plexus bench over TCP, 1 KiB messages ({machine})")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["table", "plot"])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--compare", action="append", default=[], metavar="A:B")
    parser.add_argument("--out", default="bench.png")
    args = parser.parse_args()
    reports = load(args.results)
    if args.command == "table":
        table(reports, args.compare)
    else:
        plot(reports, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
