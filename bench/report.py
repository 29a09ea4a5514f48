#!/usr/bin/env python3
"""Turns bench/run.sh's raw results into the markdown table and JSON report.

Medians over the rounds; the ratio of each union to kernel overlayfs in the
same run; the issue's target beside each stratafs ratio (met / not met).
"""
import argparse
import csv
import json
import statistics

FILESYSTEMS = ["native", "overlay", "fuse-overlayfs", "stratafs"]
FS_TITLES = {"native": "native", "overlay": "kernel overlayfs", "fuse-overlayfs": "fuse-overlayfs",
             "stratafs": "stratafs"}

# workload -> (description, unit, target). A target is ("ratio", x): the
# stratafs median divided by kernel overlayfs's at most x; or ("abs", x): the
# value itself at most x.
WORKLOADS = {
    "walk-cold": ("lstat of every entry, caches dropped, fresh mount", "s", ("ratio", 1.5)),
    "walk-warm": ("lstat of every entry, second walk on the mount", "s", ("ratio", 1.5)),
    "readdir": ("readdir of the whole tree on a fresh mount", "s", ("ratio", 2.0)),
    "seqread-cold": ("read 1 GiB sequentially, caches dropped", "s", None),
    "seqread-cached": ("read 1 GiB sequentially, second read", "s", ("ratio", 1.5)),
    "randread": ("random 4 KiB preads in the 1 GiB file, fresh mount", "s", ("ratio", 4.0)),
    "parread-large": ("2 processes reading the 1 GiB and the 500 MiB file", "s", ("ratio", 2.0)),
    "parread-small": ("2 processes reading the small files of the packages", "s", ("ratio", 1.2)),
    "create": ("new 1 KiB files in 20 new directories", "s", ("ratio", 1.3)),
    "copyup": ("append 1 byte to the 500 MiB lower file (copy-up)", "s", ("ratio", 0.2)),
    "untar": ("tar -x of small files into the mount", "s", ("ratio", 1.3)),
    "rmrf": ("rm -rf of a lower directory of 6,000 entries", "s", ("ratio", 2.0)),
    "missing": ("lstat of names that exist in no layer", "s", ("ratio", 1.1)),
    "missing-100": ("lstat of missing names in a directory every one of 100 layers holds", "s", ("ratio", 1.0)),
    "walk-cold-100": ("lstat of every entry of a 100-layer image, caches dropped", "s", ("ratio", 1.0)),
    "rss-walk": ("daemon peak RSS (VmHWM) after the cold walk", "MiB", ("abs", 64.0)),
}


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if value >= 10:
        return f"{value:.1f} s"
    if value >= 0.1:
        return f"{value:.2f} s"
    if value >= 0.001:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", required=True)
    ap.add_argument("--extras", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--stratafs-note", default="")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    machine = {}
    with open(args.machine) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            machine[key] = value

    samples = {}   # (workload, fs) -> [values]
    details = {}   # (workload, fs) -> [detail strings]
    errors = {}    # (workload, fs) -> [messages]
    with open(args.results) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            key = (row["workload"], row["fs"])
            if row["status"] == "ok":
                samples.setdefault(key, []).append(float(row["value"]))
                details.setdefault(key, []).append(row["detail"])
            else:
                errors.setdefault(key, []).append(row["detail"])

    present = [fs for fs in FILESYSTEMS if any(k[1] == fs for k in list(samples) + list(errors))]
    report = {"machine": machine, "workloads": {}, "extras": []}
    lines = []
    lines.append("| workload | " + " | ".join(FS_TITLES[fs] for fs in FILESYSTEMS) +
                 " | fuse-overlayfs ÷ kernel | stratafs ÷ kernel | target | stratafs |")
    lines.append("|---" * (len(FILESYSTEMS) + 5) + "|")
    for workload, (desc, unit, target) in WORKLOADS.items():
        if not any(k[0] == workload for k in list(samples) + list(errors)):
            continue
        medians, cells = {}, []
        for fs in FILESYSTEMS:
            vals = samples.get((workload, fs))
            if vals:
                medians[fs] = statistics.median(vals)
                cell = fmt(medians[fs], unit)
                if errors.get((workload, fs)):
                    cell += f" ({len(errors[(workload, fs)])} failed)"
            elif errors.get((workload, fs)):
                cell = "failed"
            elif fs == "stratafs" and args.stratafs_note:
                cell = "not built"
            elif workload == "rss-walk" and fs in ("native", "overlay"):
                cell = "n/a"
            else:
                cell = "-"
            cells.append(cell)

        def ratio(fs):
            if workload == "rss-walk" or fs not in medians or not medians.get("overlay"):
                return None
            return medians[fs] / medians["overlay"]

        verdict, target_text = "-", "-"
        if target:
            kind, limit = target
            target_text = f"<= {limit:g}" + (" MiB" if kind == "abs" else "x")
            value = medians.get("stratafs") if kind == "abs" else ratio("stratafs")
            if value is not None:
                verdict = "met" if value <= limit else "NOT met"
            elif "stratafs" in present or args.stratafs_note:
                verdict = "not measured"
        rf, rs = ratio("fuse-overlayfs"), ratio("stratafs")
        lines.append(f"| {workload} | " + " | ".join(cells) +
                     f" | {f'{rf:.2f}x' if rf is not None else '-'} | {f'{rs:.2f}x' if rs is not None else '-'}"
                     f" | {target_text} | {verdict} |")
        report["workloads"][workload] = {
            "description": desc, "unit": unit,
            "target": {"kind": target[0], "limit": target[1]} if target else None,
            "median": medians,
            "samples": {fs: samples.get((workload, fs), []) for fs in FILESYSTEMS},
            "details": {fs: details.get((workload, fs), []) for fs in FILESYSTEMS},
            "errors": {fs: errors.get((workload, fs), []) for fs in FILESYSTEMS if errors.get((workload, fs))},
            "ratio_to_overlay": {fs: ratio(fs) for fs in FILESYSTEMS if ratio(fs) is not None},
            "stratafs_target": verdict,
        }

    extra_lines = []
    with open(args.extras) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    # strata's time against the other tool's for the same comparison, and
    # the goal: ("ratio", x) to that tool, or ("abs", seconds).
    extra_goals = {"commit": ("ratio", 0.3), "commit-small": ("abs", 0.1),
                   "build-cold": ("ratio", 0.5), "build-cached": ("abs", 0.1)}

    def goal_of(workload):
        if workload in extra_goals:
            return extra_goals[workload]
        # The realistic builds (build-CASE-PASS): half of the peer's time
        # cold and after an edit, under 0.1 s cached.
        if workload.startswith("build-") and workload.endswith("-cached"):
            return ("abs", 0.1)
        if workload.startswith("build-") and workload.endswith(("-cold", "-edit")):
            return ("ratio", 0.5)
        return (None, None)

    for row in rows:
        report["extras"].append(row)
        value = f"{float(row['value']):.2f} s" if row["status"] == "ok" else row["status"]
        ratio, goal, verdict = "-", "-", "-"
        if row["tool"].startswith("strata") and row["status"] == "ok":
            peers = [r for r in rows if r["workload"] == row["workload"] and not r["tool"].startswith("strata")
                     and r["status"] == "ok" and float(r["value"]) > 0]
            # The goal is against the first peer measured (buildah where there are several).
            peer = peers[0] if peers else None
            mine = float(row["value"])
            if peers:
                ratio = ", ".join(f"{mine / float(p['value']):.2f}x {p['tool'].split()[0]}" for p in peers)
            kind, limit = goal_of(row["workload"])
            if kind == "ratio" and peer:
                goal = f"<= {limit:g}x"
                verdict = "met" if mine / float(peer["value"]) <= limit else "NOT met"
            elif kind == "abs":
                goal = f"< {limit:g} s"
                verdict = "met" if mine < limit else "NOT met"
        extra_lines.append(f"| {row['workload']} | {row['tool']} | {value} | {ratio} | {goal} | {verdict} | {row['detail']} |")

    md = ["Machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()), ""]
    if args.stratafs_note:
        md += [f"stratafs: {args.stratafs_note}.", ""]
    md += ["Medians over the rounds; ratios are to kernel overlayfs in the same run (lower is better).", ""]
    md += lines
    if extra_lines:
        md += ["", "| comparison | tool | time | strata ÷ peer | goal | strata | note |",
               "|---|---|---|---|---|---|---|"] + extra_lines
    failures = [(k, m) for k, msgs in sorted(errors.items()) for m in msgs[:1]]
    if failures:
        md += ["", "Failures (first message of each):", ""]
        md += [f"- {w} on {fs}: {m}" for (w, fs), m in failures]
    with open(f"{args.out}/results.md", "w") as f:
        f.write("\n".join(md) + "\n")
    with open(f"{args.out}/results.json", "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
