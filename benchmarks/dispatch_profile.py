"""Where a call's time goes: per-dispatch times of the issue-#13 benchmark models on llvm-cpu.

Each model is compiled as `decode_speed` compiles it and run by IREE's `iree-benchmark-module`
with HAL host-execution profiling (the local-task executor records every dispatch's start and
end); `iree-profile` decodes the bundle. Printed per model: each dispatch's median and min time
over the calls, its share of the call, its workgroup count, and the bandwidth it reached if it
read the bytes given for it (K or V of the valid rows for a decode's two contractions); per call,
its span (first dispatch start to last dispatch end), the time some dispatch ran, and the rest
(no dispatch running: a wait, a host readback, a worker waking up), and the two dispatches that
most often started after such a wait, with how long it was.

    python -m benchmarks.dispatch_profile [--repeats 20] [--quick] [--only NAME]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import onnx

from benchmarks import models
from benchmarks.decode_speed import FLOAT_BYTES, kvattn_compile
from benchmarks.timing import Spread, machine


@dataclasses.dataclass
class Case:
    name: str
    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]
    # dispatch-name fragment -> bytes that dispatch must read (for its GB/s column)
    reads: dict[str, int] = dataclasses.field(default_factory=dict)


def decode_case(capacity: int, valid: int, batch: int = 1, quantized: bool = False) -> Case:
    rng = np.random.default_rng(0)
    inputs = models.decode_inputs(capacity, valid, rng, batch)
    model = models.decode_model(capacity, batch)
    element_bytes = FLOAT_BYTES
    if quantized:
        inputs = models.quantized_caches(inputs, np.int8, rng)
        model, element_bytes = models.quantized_decode_model(np.int8, batch=batch, capacity=capacity), 1
    rows = batch * models.KV_HEADS * valid * models.HEAD_SIZE * element_bytes  # K (or V) of the valid rows
    label = f"decode {'int8' if quantized else 'fp32'} batch {batch} capacity {capacity} valid {valid}"
    return Case(label, model, inputs, {"matmul_like": rows})


def prefill_case(length: int) -> Case:
    return Case(f"prefill fp32 {length} causal", models.prefill_model(length),
                models.prefill_inputs(length, np.random.default_rng(0)))


def cases(quick: bool) -> list[Case]:
    if quick:
        return [decode_case(256, 250), decode_case(256, 250, quantized=True), prefill_case(64)]
    return [decode_case(4096, 1025), decode_case(4096, 4000), decode_case(16384, 4000), decode_case(4096, 4000, batch=4),
            decode_case(4096, 4000, quantized=True), prefill_case(512), prefill_case(2048)]


def profile_events(case: Case, repeats: int, directory: pathlib.Path) -> list[dict]:
    """Every dispatch event of `repeats` calls (after iree-benchmark-module's own warm-up)."""
    compiled = kvattn_compile(case.model)
    vmfb = directory / "model.vmfb"
    vmfb.write_bytes(compiled.vmfb)
    flags = []
    for spec in compiled.manifest.inputs:
        np.save(directory / f"{spec.name}.npy", case.inputs[spec.name])
        flags.append(f"--input=@{directory / spec.name}.npy")
    bundle = directory / "calls.ireeprof"
    subprocess.run([tool("iree-benchmark-module"), "--device=local-task", f"--module={vmfb}",
                    f"--function={compiled.manifest.entry}", *flags, f"--benchmark_min_time={repeats}x",
                    "--device_profiling_mode=host-execution", f"--device_profiling_output={bundle}"],
                   check=True, capture_output=True, text=True)
    report = subprocess.run([tool("iree-profile"), "dispatch", "--format=jsonl", "--dispatch_events", str(bundle)],
                            check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in report.splitlines() if line.strip()]
    return sorted((row for row in rows if row["type"] == "host_dispatch_event"), key=lambda row: row["start_host_time_ns"])


def tool(name: str) -> str:
    """An IREE runtime tool installed beside this Python (the iree-base-runtime wheel's scripts)."""
    found = shutil.which(name, path=str(pathlib.Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: install iree-base-runtime")
    return found


def split_calls(events: list[dict], calls: int) -> list[list[dict]]:
    """The events of each of `calls` calls: a call starts with the first dispatch of the program
    (the key of the earliest event; every n-th of them where the program runs it n times)."""
    first = events[0]["key"]
    per_call = max(1, sum(event["key"] == first for event in events) // calls)
    split, seen = [], 0
    for event in events:
        if event["key"] == first:
            if seen % per_call == 0:
                split.append([])
            seen += 1
        split[-1].append(event)
    return split


def busy_ns(call: list[dict]) -> int:
    """Time some dispatch of the call was running (the union of their intervals)."""
    total, end = 0, None
    for event in sorted(call, key=lambda e: e["start_host_time_ns"]):
        start, stop = event["start_host_time_ns"], event["end_host_time_ns"]
        if end is None or start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def idle_before_ns(call: list[dict]) -> dict[str, int]:
    """Per dispatch of the call, how long no dispatch had been running when it started (the
    wait it came after: a host readback, a worker waking up)."""
    idle, end = collections.defaultdict(int), None
    for event in sorted(call, key=lambda e: e["start_host_time_ns"]):
        start = event["start_host_time_ns"]
        if end is not None and start > end:
            idle[event["key"]] += start - end
        end = max(end or 0, event["end_host_time_ns"])
    return idle


def report(case: Case, events: list[dict], repeats: int) -> None:
    calls = split_calls(events, repeats)
    spans = [(c[-1]["end_host_time_ns"] - c[0]["start_host_time_ns"]) / 1e6 for c in calls]
    busy = [busy_ns(c) / 1e6 for c in calls]
    per_key = collections.defaultdict(lambda: collections.defaultdict(int))  # key -> call -> ns (summed)
    workgroups = {}
    for index, call in enumerate(calls):
        for event in call:
            per_key[event["key"]][index] += event["duration_ns"]
            workgroups[event["key"]] = "x".join(map(str, event["workgroup_count"]))
    span = statistics.median(spans)
    print(f"{case.name}: {len(calls)} calls, span median {span:.3f} ms (min {min(spans):.3f}), dispatch running "
          f"{statistics.median(busy):.3f} ms, none running {statistics.median(s - b for s, b in zip(spans, busy)):.3f} ms")
    for key, by_call in sorted(per_key.items(), key=lambda item: -statistics.median(item[1].values())):
        times = [ns / 1e6 for ns in by_call.values()]
        median = statistics.median(times)
        if median < 0.01 * span:
            continue
        reads = next((b for fragment, b in case.reads.items() if fragment in key), None)
        rate = f"  {reads / (median * 1e-3) / 1e9:5.1f} GB/s" if reads else ""
        print(f"  {median:9.3f} ms (min {min(times):.3f})  {100 * median / span:4.0f}%  wg {workgroups[key]:>9}"
              f"{rate}  {key.split('$', 1)[-1]}")
    waits = collections.defaultdict(list)  # key -> ms idle before it, per call
    for call in calls:
        idle = idle_before_ns(call)
        for key in {event["key"] for event in call}:
            waits[key].append(idle.get(key, 0) / 1e6)
    for key, times in sorted(waits.items(), key=lambda item: -statistics.fmean(item[1]))[:2]:
        spread = Spread.of(times)
        print(f"  no dispatch running before {key.split('$', 1)[-1]}: median {spread.median:.3f} ms, "
              f"p90 {spread.p90:.3f}, max {max(times):.3f}")
    print(flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small shapes, for a dry run")
    parser.add_argument("--only", help="profile only the cases whose name contains this")
    args = parser.parse_args(argv)
    print(f"# {datetime.date.today()}, {machine()}; dispatches under 1% of the call left out")
    for case in cases(args.quick):
        if args.only and args.only not in case.name:
            continue
        repeats = max(2, args.repeats // 5) if "prefill" in case.name else args.repeats
        with tempfile.TemporaryDirectory() as directory:
            report(case, profile_events(case, repeats, pathlib.Path(directory)), repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
