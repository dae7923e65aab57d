"""The printed table and the PNG plot of one bench run (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def print_table(results: dict[str, Any]) -> None:
    meta, summary = results["meta"], results["summary"]
    print(f"\nws-gateway bench ({meta['mode']}, {meta['loop']}, {meta['repeats']} runs each, "
          f"Python {meta['python']}, {meta['cpus']} CPUs)")  # fmt: skip
    header = f"| {'scenario':<28} | {'min':>10} | {'median':>10} | {'max':>10} | unit     | notes"
    print(header)
    print("|" + "-" * 30 + "|" + "-" * 12 + "|" + "-" * 12 + "|" + "-" * 12 + "|----------|------")
    for name, entry in summary.items():
        notes = ""
        if "lost" in entry:
            notes = f"lost {entry['lost']} of {entry['expected']:,} (publisher dropped {entry['dropped_by_publisher']})"
        print(f"| {name:<28} | {entry['min']:>10,.0f} | {entry['median']:>10,.0f} | {entry['max']:>10,.0f} "
              f"| trades/s | {notes}")  # fmt: skip
        for key in ("p50", "p99", "max"):
            latency = entry.get(f"latency_ms_{key}")
            if latency:
                label = f"{name} {key}"
                print(f"| {label:<28} | {latency['min']:>10.2f} | {latency['median']:>10.2f} "
                      f"| {latency['max']:>10.2f} | ms       |")  # fmt: skip
    if results["ratios"]:
        print("\n| ratio (medians, same run)               |  value | target | met")
        print("|-----------------------------------------|--------|--------|----")
        for r in results["ratios"]:
            target = f"≥ {r['target']:.2f}" if r["target"] is not None else "-"
            met = {True: "yes", False: "NO", None: ""}[r["met"]]
            print(f"| {r['ratio']:<39} | {r['value']:>6.2f} | {target:>6} | {met}")
    if results["book_apply"]:
        print(
            "\n| order book levels/side | apply µs/delta | decode µs/delta | top(25) µs | checksum(25) µs | snapshot ms"
        )
        print(
            "|------------------------|----------------|-----------------|------------|-----------------|------------"
        )
        for b in results["book_apply"]:
            cells = (
                f"{b['levels_per_side']:>22}",
                f"{b['apply_us_per_delta']:>14.2f}",
                f"{b['decode_us_per_delta']:>15.2f}",
                f"{b['top25_us']:>10.2f}",
                f"{b['checksum25_us']:>15.2f}",
                f"{b['snapshot_apply_ms']:>11.3f}",
            )
            print("| " + " | ".join(cells) + " |")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    throughput = [n for n in summary if n.startswith(("ingest.", "e2e."))]
    latency = sorted((n for n in summary if n.startswith("latency.")), key=lambda n: int(n.split("_")[-1][:-1]))
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    if throughput:
        medians = [summary[n]["median"] for n in throughput]
        low = [summary[n]["median"] - summary[n]["min"] for n in throughput]
        high = [summary[n]["max"] - summary[n]["median"] for n in throughput]
        left.barh(throughput, medians, xerr=[low, high], color="tab:blue", capsize=3)
        left.invert_yaxis()
        left.set_xlabel("trades/s (median; bars: min-max of runs)")
        left.set_title("Throughput, firehose (unlimited offered load)")
    if latency:
        rates = [int(n.split("_")[-1][:-1]) * 1000 for n in latency]
        for key, style in (("p50", "o-"), ("p99", "s-"), ("max", "^--")):
            values = [summary[n][f"latency_ms_{key}"]["median"] for n in latency]
            right.plot(rates, values, style, label=key)
        right.set_xlabel("offered load, trades/s")
        right.set_ylabel("firehose send → consumer receive, ms (median of runs)")
        right.set_yscale("log")
        right.set_xticks(rates)
        right.legend()
        right.set_title("Latency through ours + RabbitMQ")
    meta = results["meta"]
    figure.suptitle(f"ws-gateway bench: {meta['mode']}, {meta['loop']}, {meta['cpus']} CPUs, {meta['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
