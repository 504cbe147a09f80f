"""PNG plots (matplotlib, Agg backend) of the benchmark and streaming-demo results, into docs/img/.

    traffic_ratio.png       DRAM traffic ratio vs k, measured (hardware counters) against the ideal k/B
                            (from build/bench/traffic.json: `smartquant bench traffic`)
    row_activates.png       row activates vs k for each plane run R, normalised to k = B (build/bench/rows.json)
    accuracy_traffic.png    sentence-embedding cosine vs DRAM lines read, static k vs policies
                            (build/stream_demo.json: `smartquant demo`)
    energy_per_token.png    energy per token split DRAM activate / DRAM read / link / controller, per run
                            (build/stream_demo.json)
    perplexity_traffic.png  SmolLM2 perplexity vs DRAM lines read and vs energy of the streamed layer(s), static k
                            vs the per-matrix schedule (build/stream_demo_smollm2.json: `smartquant demo --model
                            smollm2`)

    smartquant bench plots [--bench-dir build/bench] [--demo-json build/stream_demo.json]
                           [--smollm2-json build/stream_demo_smollm2.json] [--img-dir docs/img]

Plots whose input file is missing are skipped (and said so).
"""
from __future__ import annotations

import json
from pathlib import Path

from smartquant.errors import SmartquantError

# default places, under the working directory (the repository when run from a clone), never the installed package
BENCH_DIR = Path("build") / "bench"
DEMO_JSON = Path("build") / "stream_demo.json"
SMOLLM2_DEMO_JSON = Path("build") / "stream_demo_smollm2.json"
IMG_DIR = Path("docs") / "img"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _load(path: Path):
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SmartquantError(f"{path} is not valid JSON: {error}") from None
    return data.get("results", data)


def _save_line_plot(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_traffic(result: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for B in sorted({r["B"] for r in result["rows"]}):
        rows = sorted((r for r in result["rows"] if r["B"] == B), key=lambda r: r["k"])
        ks = [r["k"] for r in rows]
        ax.plot(ks, [r["traffic_ratio"] for r in rows], "o", label=f"measured, B = {B}")
        ax.plot(ks, [k / B for k in ks], "-", alpha=0.5, label=f"ideal k/B, B = {B}")
    return _save_line_plot(plt, fig, ax, path, "precision k (planes read)", "DRAM lines read / full precision",
                           "Sequential packed-k streaming: DRAM traffic vs k")


def plot_rows(result: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for R in sorted({r["R"] for r in result["rows"]}):
        rows = sorted((r for r in result["rows"] if r["R"] == R), key=lambda r: r["k"])
        full = rows[-1]["activates"] or 1
        ax.plot([r["k"] for r in rows], [r["activates"] / full for r in rows], "o-", label=f"R = {R}")
    B = result["rows"][0]["B"]
    ax.plot(range(1, B + 1), [k / B for k in range(1, B + 1)], "--", color="grey", label="k/B")
    return _save_line_plot(plt, fig, ax, path, "precision k", "row activates / activates at k = B",
                           "DRAM row activates vs k (open-page row model, 8 KiB rows)")


def plot_accuracy_traffic(demo: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    policies = 0
    for run in demo["runs"]:
        static = run["label"].startswith("static")
        ax.plot(run["counters"]["dram_lines_read"], run["embedding_cos_mean"], "o" if static else "s",
                color="tab:blue" if static else "tab:red")
        # policies land close together: stack their labels below the point instead of on top of each other
        offset = (4, 4) if static else (6, -12 * (policies := policies + 1))
        ax.annotate(run["label"], (run["counters"]["dram_lines_read"], run["embedding_cos_mean"]), fontsize=7,
                    xytext=offset, textcoords="offset points")
    ax.set_xlabel("DRAM lines read (hardware counter)")
    ax.set_ylabel("sentence-embedding cosine vs FP32")
    ax.set_title(f"MiniLM {demo['config']['format']} layers {demo['config']['layers']} streamed through the RTL")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_energy(demo: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [run["label"] for run in demo["runs"]]
    tokens = max(1, demo["tokens"])
    parts = [("dram_activate_pj", "DRAM activate"), ("dram_read_pj", "DRAM read"), ("link_pj", "link"),
             ("controller_pj", "controller")]
    bottom = [0.0] * len(labels)
    for key, name in parts:
        values = [run["energy"][key] / 1e3 / tokens for run in demo["runs"]]
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("nJ per token (weight streaming)")
    ax.set_title(f"Energy per token, {demo['tokens']} tokens, layers {demo['config']['layers']}")
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_perplexity_traffic(demo: dict, path: Path) -> Path:
    """Two panels, perplexity (RTL-streamed run) against the streamed layers' DRAM lines read (hardware counter)
    and against their streaming energy (counters x golden/energy.py, activates from the row model)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    reference = demo["reference"]["perplexity"]
    for ax, (xlabel, value) in zip(axes, (
            ("DRAM lines read by the streamed layer(s) (hardware counter)",
             lambda run: run["counters"]["dram_lines_read"]),
            ("energy of streaming the layer(s), uJ (counters x energy model)",
             lambda run: run["energy"]["total_pj"] / 1e6))):
        static = sorted((run for run in demo["runs"] if run["label"].startswith("static")), key=value)
        ax.plot([value(run) for run in static], [run["perplexity"] for run in static], "o-", color="tab:blue",
                label="static k")
        for run in demo["runs"]:
            policy = not run["label"].startswith("static")
            if policy:
                ax.plot(value(run), run["perplexity"], "s", color="tab:red", label=run["label"])
            ax.annotate(run["label"].replace("static ", ""), (value(run), run["perplexity"]), fontsize=7,
                        xytext=(5, 4 if not policy else -10), textcoords="offset points")
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label=f"reference {reference:.2f}")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"perplexity, {demo['tokens']} tokens of lee.cor")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"SmolLM2-135M, layers {demo['config']['layers']} streamed through the RTL (R = "
                 f"{demo['config']['R']}), every layer at the run's k", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(bench_dir: Path | None = None, demo_json: Path | None = None, img_dir: Path | None = None,
                verbose: bool = False, smollm2_json: Path | None = None) -> list:
    """Every plot whose input exists; returns the written paths."""
    bench_dir = Path(bench_dir) if bench_dir else BENCH_DIR
    demo_json = Path(demo_json) if demo_json else DEMO_JSON
    smollm2_json = Path(smollm2_json) if smollm2_json else SMOLLM2_DEMO_JSON
    img_dir = Path(img_dir) if img_dir else IMG_DIR
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source, plot in (("traffic_ratio.png", bench_dir / "traffic.json", plot_traffic),
                               ("row_activates.png", bench_dir / "rows.json", plot_rows),
                               ("accuracy_traffic.png", demo_json, plot_accuracy_traffic),
                               ("energy_per_token.png", demo_json, plot_energy),
                               ("perplexity_traffic.png", smollm2_json, plot_perplexity_traffic)):
        data = _load(source)
        if data is None:
            if verbose:
                print(f"skipped {name}: {source} not found")
            continue
        written.append(plot(data, img_dir / name))
    return written


def add_arguments(group) -> None:
    group.add_argument("--bench-dir", default=None, help="directory of the benchmark JSON files (build/bench)")
    group.add_argument("--demo-json", default=None, help="streaming demo result (build/stream_demo.json)")
    group.add_argument("--smollm2-json", default=None,
                       help="SmolLM2 streaming demo result (build/stream_demo_smollm2.json)")
    group.add_argument("--img-dir", default=None, help="where the PNGs go (docs/img)")


def run(args) -> int:
    written = write_plots(getattr(args, "bench_dir", None), getattr(args, "demo_json", None),
                          getattr(args, "img_dir", None), verbose=True, smollm2_json=getattr(args, "smollm2_json", None))
    for path in written:
        print(f"wrote {path}")
    if not written:
        raise SmartquantError("no input found: run `smartquant bench all` and `smartquant demo` first")
    return 0
