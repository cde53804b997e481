"""The GPU run script's two halves, dry-run on the CPU: prepare a small bundle for llvm-cpu and
run it with the local-task driver (the real run uses --target cuda and --device cuda)."""

from __future__ import annotations

from benchmarks.gpu import prepare, run_on_gpu


def test_gpu_bundle_dry_run_on_cpu(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert prepare.main(["--target", "llvm-cpu", "--quick", "--no-wheels", "--max-cases", "4",
                         "--bundle", str(bundle)]) == 0
    assert len(list((bundle / "cases").glob("*.vmfb"))) == 4
    assert run_on_gpu.main(["--bundle", str(bundle), "--device", "local-task", "--repeats", "2"]) == 0
    table = capsys.readouterr().out.split("\nwhat")[-1]
    assert "conformance Attention on local-task  4/4 passed" in table
    assert "decode (capacity 256, 65 valid)" in table and "prefill 64 causal" in table
