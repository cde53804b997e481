"""The GPU run script's two halves, dry-run on the CPU: prepare a small bundle for llvm-cpu and
run it with the local-task driver (the real run uses --target cuda and --device cuda)."""

from __future__ import annotations

import re

from benchmarks.gpu import prepare, run_on_gpu


def test_gpu_bundle_dry_run_on_cpu(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert prepare.main(["--target", "llvm-cpu", "--quick", "--no-wheels", "--max-cases", "1",
                         "--bundle", str(bundle)]) == 0
    assert run_on_gpu.main(["--bundle", str(bundle), "--device", "local-task", "--repeats", "2"]) == 0
    table = capsys.readouterr().out.split("\nwhat")[-1]
    for op in prepare.OPS:
        assert re.search(rf"^conformance {op} on local-task +1/1 passed$", table, re.MULTILINE), op
    decoders = re.search(r"^exported decoders on local-task +(\d+)/(\d+) passed$", table, re.MULTILINE)
    assert decoders and decoders[1] == decoders[2] and int(decoders[1]) >= 3  # prefill, decode, batch 2
    for row in ("decode capacity 256, 65 valid, float32 ", "decode capacity 256, 200 valid, float32 at precision fp16",
                "decode capacity 512, 65 valid, float32 ", "prefill 64 causal, float32 at precision fp16",
                "prefill 64 causal, float16 "):
        assert row in table
