"""The printed table and the PNG plot of one bench run (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def unit(name: str) -> str:
    return "msgs/s" if name.startswith(("ceiling.", "soak.")) else "trades/s"


def print_table(results: dict[str, Any]) -> None:
    meta, summary = results["meta"], results["summary"]
    print(f"\nws-gateway bench ({meta['mode']}, {meta['loop']}, {meta['repeats']} runs each, "
          f"Python {meta['python']}, {meta['cpus']} CPUs)")  # fmt: skip
    print(f"| {'scenario':<30} | {'min':>10} | {'median':>10} | {'max':>10} | unit     | notes")
    print("|" + "-" * 32 + "|" + "-" * 12 + "|" + "-" * 12 + "|" + "-" * 12 + "|----------|------")
    for name, entry in summary.items():
        notes = ""
        if "lost" in entry:
            notes = f"lost {entry['lost']} of {entry['expected']:,} (publisher dropped {entry['dropped_by_publisher']})"
        print(f"| {name:<30} | {entry['min']:>10,.0f} | {entry['median']:>10,.0f} | {entry['max']:>10,.0f} "
              f"| {unit(name):<8} | {notes}")  # fmt: skip
        cpu = entry.get("cpu_us_per_trade")
        if cpu:
            label = "  worker CPU per trade"
            print(f"| {label:<30} | {cpu['min']:>10.2f} | {cpu['median']:>10.2f} | {cpu['max']:>10.2f} | µs       |")
        for key in ("p50", "p99", "max"):
            latency = entry.get(f"latency_ms_{key}")
            if latency:
                label = f"  {name} {key}"
                print(f"| {label:<30} | {latency['min']:>10.2f} | {latency['median']:>10.2f} "
                      f"| {latency['max']:>10.2f} | ms       |")  # fmt: skip
        for key, label, fmt in (
            ("rss_start_mb", "RSS at start", "{:>10.1f}"),
            ("rss_warm_mb", "RSS after warm-up", "{:>10.1f}"),
            ("rss_end_mb", "RSS at end", "{:>10.1f}"),
            ("rss_growth", "RSS growth (warm → end)", "{:>+10.2%}"),
            ("rss_growth_from_start", "RSS growth (start → end)", "{:>+10.2%}"),
            ("rss_growth_mb_per_min", "RSS growth, MB/min", "{:>10.3f}"),
            ("dropped", "events dropped", "{:>10,.0f}"),
            ("max_buffered", "most events buffered", "{:>10,.0f}"),
            ("cpu_share", "worker CPU, share of a core", "{:>10.1%}"),
            ("cpu_us_per_msg", "worker CPU µs per message", "{:>10.1f}"),
        ):
            values = entry.get(key)
            if values:
                cells = " | ".join(fmt.format(values[k]) for k in ("min", "median", "max"))
                kind = "MB" if key.endswith("_mb") else ""
                print(f"| {'  ' + label:<30} | {cells} | {kind:<8} |")
    if results["ratios"]:
        print("\n| ratio (medians, same run)                            |  value | target | met")
        print("|------------------------------------------------------|--------|--------|----")
        for r in results["ratios"]:
            target = f"≥ {r['target']:.2f}" if r["target"] is not None else "-"
            met = {True: "yes", False: "NO", None: ""}[r["met"]]
            print(f"| {r['ratio']:<52} | {r['value']:>6.2f} | {target:>6} | {met}")
    if results.get("checks"):
        print("\n| target                                               | measured (median)      | met")
        print("|------------------------------------------------------|------------------------|----")
        for c in results["checks"]:
            print(f"| {c['check']:<52} | {c['value']:<22} | {'yes' if c['met'] else 'NO'}")
    if results["book_apply"]:
        print(
            "\n| order book levels/side | apply µs/delta | decode µs/delta | top(25) µs | checksum(25) µs | snapshot ms"
        )
        print(
            "|------------------------|----------------|-----------------|------------|-----------------|------------"
        )
        for b in results["book_apply"]:
            book_cells = (
                f"{b['levels_per_side']:>22}",
                f"{b['apply_us_per_delta']:>14.2f}",
                f"{b['decode_us_per_delta']:>15.2f}",
                f"{b['top25_us']:>10.2f}",
                f"{b['checksum25_us']:>15.2f}",
                f"{b['snapshot_apply_ms']:>11.3f}",
            )
            print("| " + " | ".join(book_cells) + " |")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    throughput = [n for n in summary if n.startswith(("ingest.", "e2e.", "ceiling."))]
    offered = sorted(
        (n for n in summary if n.startswith(("latency.", "sustained."))), key=lambda n: int(n.split("_")[-1][:-1])
    )
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(19, 5.5))
    if throughput:
        medians = [summary[n]["median"] for n in throughput]
        low = [summary[n]["median"] - summary[n]["min"] for n in throughput]
        high = [summary[n]["max"] - summary[n]["median"] for n in throughput]
        colors = ["tab:green" if n.startswith("ceiling.") else "tab:blue" for n in throughput]
        left.barh(throughput, medians, xerr=[low, high], color=colors, capsize=3)
        left.invert_yaxis()
        left.set_xscale("log")
        left.set_xlabel("trades (or msgs) per s, log scale (median; bars: min-max of runs)")
        left.set_title("Throughput at unlimited offered load (green: ceilings)")
    if offered:
        rates = [int(n.split("_")[-1][:-1]) * 1000 for n in offered]
        delivered = [summary[n]["median"] for n in offered]
        middle.plot(rates, rates, ":", color="gray", label="offered")
        middle.plot(rates, delivered, "o-", label="delivered (consumer)")
        middle.set_xlabel("offered load, trades/s")
        middle.set_ylabel("trades/s received by the consumer (median)")
        middle.legend()
        middle.set_title("Throughput vs offered load, ours + RabbitMQ")
        for key, style in (("p50", "o-"), ("p99", "s-"), ("max", "^--")):
            values = [summary[n][f"latency_ms_{key}"]["median"] for n in offered]
            right.plot(rates, values, style, label=key)
        right.set_xlabel("offered load, trades/s")
        right.set_ylabel("firehose send → consumer receive, ms (median of runs)")
        right.set_yscale("log")
        right.legend()
        right.set_title("Latency vs offered load, ours + RabbitMQ")
    meta = results["meta"]
    figure.suptitle(f"ws-gateway bench: {meta['mode']}, {meta['loop']}, {meta['cpus']} CPUs, {meta['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
