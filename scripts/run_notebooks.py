#!/usr/bin/env python3
"""Executes kdscope's notebooks in Jupyter, one after another, with
`jupyter nbconvert --to notebook --execute --ExecutePreprocessor.kernel_name=rust` (evcxr kernel), and
checks their outputs. Errors are kept in the executed copy (--allow-errors) so they can be printed here.

Each notebook lists what its executed copy must contain in its metadata, e.g.
    "kdscope": {"expect": ["table", "chart", "image", "report:../reports/quickstart.html"]}
  table  - an HTML table made by kdscope (class "kdscope-frame")
  chart  - a plotly chart div made by kdscope (class "kdscope-chart"), with plotly.js inlined once
  image  - an inline PNG
  report:PATH - the file PATH (relative to the notebook) exists, is non-empty HTML and its path was printed
  report-contains:PATH:TEXT - the file PATH contains TEXT
Executed copies go to notebooks/executed/. Exit status 1 if a cell fails or a check does not hold.

usage: run_notebooks.py [NOTEBOOK ...]   (default: every notebooks/*.ipynb)
"""
import glob
import os
import subprocess
import sys
import re
import time

import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
OUT_DIR = os.path.join(NB_DIR, "executed")
# The jupyter of this Python's environment (the venv), else the one on PATH.
_here = os.path.join(os.path.dirname(sys.executable), "jupyter")
JUPYTER = _here if os.path.exists(_here) else "jupyter"


EPOCH_LOG = re.compile(r"epoch +\d+/\d+ ")


def outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def texts(nb, mime):
    for out in outputs(nb):
        data = out.get("data", {})
        if mime in data:
            v = data[mime]
            yield v if isinstance(v, str) else "".join(v)
        if mime == "text/plain" and out.get("output_type") == "stream":
            t = out.get("text", "")
            yield t if isinstance(t, str) else "".join(t)


def check(nb, path):
    failures = []
    html = "\n".join(texts(nb, "text/html"))
    plain = "\n".join(texts(nb, "text/plain"))
    for want in nb.metadata.get("kdscope", {}).get("expect", []):
        if want == "table":
            ok = 'class="kdscope-frame"' in html
        elif want == "chart":
            ok = 'class="kdscope-chart"' in html and "Plotly.newPlot" in html
            n_js = html.count("window.Plotly = Plotly")
            if ok and n_js != 1:
                failures.append(f"plotly.js is inlined {n_js} times (want once)")
        elif want == "image":
            ok = any("image/png" in o.get("data", {}) for o in outputs(nb))
        elif want.startswith("report:"):
            rel = want[len("report:"):]
            file = os.path.normpath(os.path.join(os.path.dirname(path), rel))
            ok = os.path.isfile(file) and os.path.getsize(file) > 0 and os.path.basename(rel) in plain
            if ok:
                with open(file, encoding="utf-8") as f:
                    page = f.read()
                ok = page.lstrip().startswith("<!DOCTYPE html>") and "<script src=" not in page
        elif want.startswith("report-contains:"):
            rel, text = want[len("report-contains:"):].split(":", 1)
            file = os.path.normpath(os.path.join(os.path.dirname(path), rel))
            ok = os.path.isfile(file) and text in open(file, encoding="utf-8").read()
        else:
            failures.append(f"unknown expectation {want!r}")
            continue
        if not ok:
            failures.append(f"expected {want!r} in the executed notebook")
    if not nb.metadata.get("kdscope", {}).get("expect"):
        failures.append("the notebook declares no expected outputs (metadata kdscope.expect)")
    return failures


def main(paths):
    os.makedirs(OUT_DIR, exist_ok=True)
    paths = paths or sorted(glob.glob(os.path.join(NB_DIR, "*.ipynb")))
    failed = False
    for path in paths:
        path = os.path.abspath(path)
        name = os.path.basename(path)
        start = time.time()
        # Remove what a previous run left, so only this run's outputs are checked.
        expect = nbformat.read(path, as_version=4).metadata.get("kdscope", {}).get("expect", [])
        stale = [os.path.join(OUT_DIR, name)] + [
            os.path.normpath(os.path.join(os.path.dirname(path), w[len("report:"):]))
            for w in expect if w.startswith("report:")]
        for f in stale:
            if os.path.exists(f):
                os.remove(f)
        cmd = [JUPYTER, "nbconvert", "--to", "notebook", "--execute",
               "--ExecutePreprocessor.kernel_name=rust", "--ExecutePreprocessor.timeout=1800",
               "--allow-errors", "--output-dir", OUT_DIR, path]
        run = subprocess.run(cmd, cwd=os.path.dirname(path), capture_output=True, text=True)
        out_path = os.path.join(OUT_DIR, name)
        if run.returncode != 0 or not os.path.exists(out_path):
            problems = [f"nbconvert failed ({run.returncode}):\n{run.stderr[-4000:]}"]
        else:
            nb = nbformat.read(out_path, as_version=4)
            problems = []
            for cell in nb.cells:
                for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
                    if out.get("output_type") == "error":
                        problems.append(f"cell failed:\n{cell.source}\n--> {out.get('ename')}: {out.get('evalue')}")
                    text = out.get("text", "") if out.get("output_type") == "stream" else ""
                    if "panicked at" in text:
                        # A panic on a worker thread is printed to stderr without failing the cell.
                        problems.append(f"cell panicked:\n{cell.source}\n--> {text.strip()[:600]}")
                    elif out.get("name") == "stderr":
                        # evcxr prints the error of a cell's `?` to stderr without failing the cell;
                        # the only stderr lines kdscope's notebooks may print are training logs.
                        bad = [l for l in text.splitlines() if l.strip() and not EPOCH_LOG.search(l)]
                        if bad:
                            problems.append(f"cell wrote to stderr (an error?):\n{cell.source}\n--> {bad[0][:600]}")
            problems += check(nb, path)
        took = time.time() - start
        if problems:
            failed = True
            print(f"FAIL {name} ({took:.0f} s)")
            for p in problems:
                print("  " + p.replace("\n", "\n  "))
        else:
            print(f"ok   {name} ({took:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
