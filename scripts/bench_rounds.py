"""The RESULT lines of a benchmark log, by round: what scripts/bench_vs_pytorch.sh and
scripts/bench_bf16.sh tabulate.

A log holds `ROUND <n>` lines, each followed by that round's `RESULT <name> <sec/iter> <img/s>`
lines (kdscope bench, the anchor script, benches/torch_autocast.py), and the FMA-peak reading that
each `kdscope bench` run prints before its results."""
import statistics

ARCH = {"resnet20": "r20", "resnet56": "r56"}


PEAK = "FMA peak (measured, f32, all threads):"

# A `kdscope bench` run that began at less than this share of the log's highest FMA-peak reading
# ran on a contended machine (another tenant on the host: one core's worth of FMAs for two threads).
CONTENDED = 0.8


def rounds(path):
    """One dict per round: result name -> the images/s of its repetitions; under "_peak", each
    kdscope result's name -> the FMA-peak reading of the `kdscope bench` run it came from; under
    "_best", the highest reading of the whole log (None without any)."""
    out, cur, peak = [], None, None
    for line in open(path):
        if line.startswith("ROUND"):
            cur = {"_peak": {}}
            out.append(cur)
        elif line.startswith(PEAK):
            peak = float(line[len(PEAK):].split()[0])
        elif line.startswith("RESULT"):
            _, name, _, ips = line.split()[:4]
            cur.setdefault(name, []).append(float(ips))
            if not name.startswith("torch") and peak is not None:
                cur["_peak"][name] = peak
    best = max((p for r in out for p in r["_peak"].values()), default=None)
    for r in out:
        r["_best"] = best
    return out


def contended(res, name):
    """Where `name`'s kdscope run in round `res` began below CONTENDED of the log's highest FMA-peak
    reading: a note naming both readings; else ""."""
    best, p = res["_best"], res["_peak"].get(name)
    if best is None or p is None or p >= CONTENDED * best:
        return ""
    return f"  (FMA peak {p:.0f} of {best:.0f} GFLOP/s at its start: contended, rerun)"


def median(res, name):
    """The median images/s of `name` in round `res`, NaN where it did not run."""
    return statistics.median(res[name]) if name in res else float("nan")


def tables(path, header):
    """Each round's results, after printing the round's title and the table's `header` line."""
    for i, res in enumerate(rounds(path), 1):
        print(f"\nround {i}: medians, images/s")
        print(header)
        yield res
