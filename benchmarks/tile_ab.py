"""Interleaved A/B of llvm-cpu tile sizes on the issue-#13 benchmark models.

Each variant sets integer constants of `kvattn.lowering.attention_tiles` (e.g. QK_HEAD_STEP=4)
while the models compile; the empty variant "" is main as it stands. All variants' modules are
compiled first, then their calls alternate in rounds within one process, so that the slow and
fast phases of a shared VM fall on every variant alike (whole runs of one variant after
another can differ by 1.5x on such a machine). Printed per case and variant: the median and min
over all calls, and the median of each round.

    python -m benchmarks.tile_ab "" "QK_HEAD_STEP=4" "PV_VALUE_TILE=64,PV_KEY_STEP=8" \\
        [--cases 4096:4000,16384:16000:1,4096:4000:4,4096:4000:1:int8,prefill:512] [--calls 10] [--rounds 6]

A case is CAPACITY:VALID[:BATCH[:int8]] (a decode step, or its int8-cache twin) or
prefill:LENGTH (causal): the models and inputs of benchmarks.dispatch_profile.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

from benchmarks.decode_speed import kvattn_compile
from benchmarks.dispatch_profile import Case, decode_case, prefill_case
from benchmarks.timing import Spread, machine
from kvattn.lowering import attention_tiles
from kvattn.runtime.module import CompiledModule


def parse_variant(text: str) -> dict[str, int]:
    """"NAME=VALUE,..." as {NAME: VALUE}; each NAME an integer constant of attention_tiles."""
    settings = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if not isinstance(getattr(attention_tiles, name, None), int) or not name.isupper():
            raise argparse.ArgumentTypeError(f"{name!r} is not an integer constant of attention_tiles")
        try:
            settings[name] = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: the value must be an integer") from None
    return settings


@contextlib.contextmanager
def tiles(settings: dict[str, int]):
    """attention_tiles with `settings`, restored after."""
    saved = {name: getattr(attention_tiles, name) for name in settings}
    for name, value in settings.items():
        setattr(attention_tiles, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(attention_tiles, name, value)


def case_of(spec: str) -> Case:
    """The benchmark case a spec names (see the module docstring), as dispatch_profile builds it."""
    parts = spec.split(":")
    if parts[0] == "prefill":
        return prefill_case(int(parts[1]))
    if parts[3:] not in ([], ["int8"]):
        raise SystemExit(f"case {spec!r}: the fourth field may only be int8")
    return decode_case(int(parts[0]), int(parts[1]), batch=int(parts[2]) if len(parts) > 2 else 1,
                       quantized=parts[3:] == ["int8"])


def label(settings: dict[str, int]) -> str:
    return ",".join(f"{name}={value}" for name, value in settings.items()) or "main"


def compare(spec: str, variants: list[dict[str, int]], calls: int, rounds: int) -> None:
    case = case_of(spec)
    runs, compiled = [], {}
    for variant in variants:
        with tiles(variant):
            vmfb = kvattn_compile(case.model).vmfb
        if vmfb in compiled:  # the constants do not reach this model
            print(f"  {spec}: {label(variant)} compiles to the same vmfb as {compiled[vmfb]}")
        compiled.setdefault(vmfb, label(variant))
        module = CompiledModule(vmfb)
        views = module.upload(case.inputs)
        for _ in range(3):  # warm-up
            module.invoke(views)
        runs.append((variant, module, views, []))
    for _ in range(rounds):
        for _, module, views, samples in runs:
            for _ in range(calls):
                start = time.perf_counter()
                module.invoke(views)
                samples.append((time.perf_counter() - start) * 1e3)
    print(f"{spec}: {rounds} rounds of {calls} calls per variant")
    for variant, _, _, samples in runs:
        per_round = [statistics.median(samples[i * calls:(i + 1) * calls]) for i in range(rounds)]
        print(f"  {label(variant):<48} {Spread.of(samples)}  rounds " + " ".join(f"{ms:.3f}" for ms in per_round),
              flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", type=parse_variant,
                        help='NAME=VALUE,... of attention_tiles constants; "" is main')
    parser.add_argument("--cases", default="4096:4000,16384:16000")
    parser.add_argument("--calls", type=int, default=10, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    print(f"# {machine()}")
    for spec in args.cases.split(","):
        compare(spec, args.variants, args.calls, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
