"""The run as a PNG: one panel per kind of figure, bars at the median, whiskers at min–max,
a dashed line where a figure has a target of its own."""

from __future__ import annotations

from pathlib import Path

from bench.results import Row, Run

PANELS = (
    ("throughput", "Throughput (messages or sends per second of wall time)"),
    ("per_cpu", "Per CPU-second of the measured process (other load on the machine skews it less)"),
    ("scaling", "Worker deliveries/s on Redis: 2 workers over 1, measured in the same round"),
    ("latency", "Intake latency at 2,000 req/s (ms)"),
    ("tokens", "Token fetches from cold"),
    ("memory", "Gateway RSS, 1,000,000 queued (MB)"),
)
MET, MISSED, NEUTRAL = "#2e7d32", "#c62828", "#607d8b"


def _colour(row: Row) -> str:
    return {True: MET, False: MISSED, None: NEUTRAL}[row.met]


def _label(row: Row) -> str:
    label = row.spec.name
    if row.ratio is not None:
        label += f"  ({row.ratio:.2f}×)"
    return label


def draw(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, title) for key, title in PANELS if any(r.spec.chart == key for r in run.rows)]
    if not panels:  # every selected case was skipped
        return
    heights = [max(1, sum(r.spec.chart == key for r in run.rows)) for key, _ in panels]
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(11, 1.2 + 0.55 * sum(heights) + 0.9 * len(panels)),
        gridspec_kw={"height_ratios": heights}, squeeze=False,
    )  # fmt: skip
    for axis, (key, title) in zip(axes[:, 0], panels, strict=True):
        rows = [r for r in run.rows if r.spec.chart == key]
        positions = list(range(len(rows)))[::-1]
        errors = [[r.median - r.low for r in rows], [r.high - r.median for r in rows]]
        axis.barh(positions, [r.median for r in rows], xerr=errors, capsize=3,
                  color=[_colour(r) for r in rows])  # fmt: skip
        axis.set_yticks(positions, [_label(r) for r in rows], fontsize=8)
        axis.set_title(title, fontsize=10, loc="left")
        for position, row in zip(positions, rows, strict=True):
            shown = f"{row.median:,.0f}" if row.median >= 100 else f"{row.median:.3g}"
            axis.annotate(f"  {shown}", (row.high, position), va="center", fontsize=8)
            target = row.spec.target
            if target is not None and not target.on_ratio:
                axis.plot([target.bound] * 2, [position - 0.4, position + 0.4], "k--", lw=1)
        axis.grid(axis="x", alpha=0.3)
    mode = " (quick mode)" if run.quick else ""
    figure.suptitle(
        f"wxgate benchmarks{mode}: medians of {run.rounds} round(s); green: target met, "
        "red: missed, grey: no target",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    figure.savefig(path, dpi=110)
    plt.close(figure)
