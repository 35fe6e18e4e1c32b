"""The RESULT lines of a benchmark log, by round: what scripts/bench_vs_pytorch.sh and
scripts/bench_bf16.sh tabulate.

A log holds `ROUND <n>` lines, each followed by that round's `RESULT <name> <sec/iter> <img/s>`
lines (kdscope bench, the anchor script, benches/torch_autocast.py)."""
import statistics

ARCH = {"resnet20": "r20", "resnet56": "r56"}


def rounds(path):
    """One dict per round: result name -> the images/s of its repetitions."""
    out, cur = [], None
    for line in open(path):
        if line.startswith("ROUND"):
            cur = {}
            out.append(cur)
        elif line.startswith("RESULT"):
            _, name, _, ips = line.split()[:4]
            cur.setdefault(name, []).append(float(ips))
    return out


def median(res, name):
    """The median images/s of `name` in round `res`, NaN where it did not run."""
    return statistics.median(res[name]) if name in res else float("nan")


def tables(path, header):
    """Each round's results, after printing the round's title and the table's `header` line."""
    for i, res in enumerate(rounds(path), 1):
        print(f"\nround {i}: medians, images/s")
        print(header)
        yield res
