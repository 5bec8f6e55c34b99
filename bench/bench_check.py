"""The linearizability checker against Porcupine's published figures, on Porcupine's own test data.

Times every Jepsen etcd log (102 files, cas-register) as one total, and each kv history, over
several runs; prints medians (wall and CPU) for reading the files, checking them, and both. The
Porcupine column is the reference from ../shared/testdata/porcupine/VERDICTS.md (Go, 2 cores, this
kind of machine); stalwart runs pure Python on one core. Every verdict is compared with
VERDICTS.md, so a fast wrong answer cannot pass unnoticed.

    .venv/bin/python -m bench.bench_check [--runs 7] [--data ../shared/testdata/porcupine]

Rows with jobs=2 share the partitions among two forked workers (as Porcupine uses both cores);
their CPU column adds the workers' CPU time.
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import sys
import time
from pathlib import Path

from stalwart.check import Verdict, check_operations, read_history

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "porcupine"
PORCUPINE = {"etcd (102 logs)": "0.38-0.64 s", "kv/c50-ok.txt": "0.16-0.27 s", "kv/c50-bad.txt": "~6 ms"}


def _verdicts(data: Path) -> dict[str, bool]:
    rows = re.findall(r"^\| ((?:jepsen|kv)/\S+) \| (yes|NO) \|$", (data / "VERDICTS.md").read_text(), re.M)
    return {name: answer == "yes" for name, answer in rows}


def _cpu_s() -> float:
    """CPU seconds of this process and of its reaped children (the --jobs workers)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def _run(data: Path, names: list[str], model: str, verdicts: dict[str, bool], jobs: int) -> tuple[float, ...]:
    """One pass over ``names``: (read wall, check wall, read cpu, check cpu)."""
    read_w = check_w = read_c = check_c = 0.0
    for name in names:
        w0, c0 = time.perf_counter(), _cpu_s()
        history = read_history(str(data / name))
        w1, c1 = time.perf_counter(), _cpu_s()
        result = check_operations(history.operations, model, jobs=jobs)
        w2, c2 = time.perf_counter(), _cpu_s()
        read_w, check_w = read_w + w1 - w0, check_w + w2 - w1
        read_c, check_c = read_c + c1 - c0, check_c + c2 - c1
        expected = Verdict.LINEARIZABLE if verdicts.get(name, True) else Verdict.NOT_LINEARIZABLE
        if result.verdict is not expected:
            raise SystemExit(f"{name}: got {result.verdict.value}, VERDICTS.md says {expected.value}")
    return read_w, check_w, read_c, check_c


def main() -> int:
    parser = argparse.ArgumentParser(description="checker benchmark vs Porcupine")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    if not (args.data / "VERDICTS.md").is_file():
        print(f"no Porcupine test data at {args.data}", file=sys.stderr)
        return 2
    verdicts = _verdicts(args.data)
    etcd = sorted(p.relative_to(args.data).as_posix() for p in (args.data / "jepsen").glob("etcd_*.log"))
    cases = [("etcd (102 logs)", etcd, "cas-register", 1)]
    kv = sorted(n for n in verdicts if n.startswith("kv/"))
    cases += [(name, [name], "kv", 1) for name in kv]
    cases += [(name, [name], "kv", 2) for name in kv if name.startswith("kv/c50")]
    head = f"{'history':<16} {'jobs':>4} {'read':>8} {'check':>8} {'total':>8}"
    head += f" {'check cpu':>9} {'total cpu':>9}  {'Porcupine (Go)':>14}"
    print(f"median of {args.runs} runs, wall seconds unless noted; machine may be shared")
    print(head)
    print("-" * len(head))
    for label, names, model, jobs in cases:
        runs = [_run(args.data, names, model, verdicts, jobs) for _ in range(args.runs)]
        read_w, check_w = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        totals = statistics.median(r[0] + r[1] for r in runs)
        check_c = statistics.median(r[3] for r in runs)
        cpu = statistics.median(r[2] + r[3] for r in runs)
        print(
            f"{label:<16} {jobs:>4} {read_w:>8.4f} {check_w:>8.4f} {totals:>8.4f} {check_c:>9.4f} {cpu:>9.4f}"
            f"  {PORCUPINE.get(label, '-'):>14}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
