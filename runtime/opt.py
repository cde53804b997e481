"""`kvattn-opt`: run named kvattn passes on MLIR text and print the result (for lit tests).

    kvattn-opt input.mlir --passes=kvattn-raise-onnx,kvattn-lower-to-iree
    kvattn-opt input.mlir --passes=... --split-input-file   (chunks separated by `// -----`)
    kvattn-opt input.mlir --passes=... --target=cuda --compile-to=executable-targets
                          (then iree-compile with the target's flags, to that IREE stage)

Errors are printed as `error: <message>` and make the exit code 1.
"""

from __future__ import annotations

import argparse
import sys

from iree.compiler import ir

from kvattn.lowering import onnx_import
from kvattn.lowering.diagnostics import KvattnError
from kvattn.lowering.options import LoweringOptions
from kvattn.passes import registry
from kvattn.runtime import compiler, targets

SPLIT_MARKER = "// -----"


def main(argv: list[str] | None = None) -> int:
    listing = "\n".join(f"  {p.name:<24} {p.summary}" for p in registry.PASSES.values())
    parser = argparse.ArgumentParser(
        prog="kvattn-opt", description="Run kvattn passes on MLIR text.",
        epilog=f"passes:\n{listing}", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="MLIR file, or - for standard input")
    parser.add_argument("--passes", default="", help="comma-separated pass names, run in order")
    parser.add_argument("--target", default="llvm-cpu", choices=sorted(targets.TARGETS),
                        help="use this target's lowering choices (default llvm-cpu)")
    parser.add_argument("--attention-precision", default="ieee", choices=list(targets.ATTENTION_PRECISIONS),
                        help="as kvattn compile's --attention-precision (default ieee)")
    parser.add_argument("--fused-attention", action="store_true",
                        help="lower every attention the fused iree_linalg_ext.attention can take as that op, "
                             "also where llvm-cpu would materialize small scores (to test the fused op's tiles)")
    parser.add_argument("--compile-to", choices=compiler.IREE_STAGES,
                        help="continue with iree-compile, with the target's flags, to this IREE stage")
    parser.add_argument("--split-input-file", action="store_true",
                        help=f"process each chunk between '{SPLIT_MARKER}' lines separately")
    args = parser.parse_args(argv)
    try:
        passes = [registry.get(name) for name in args.passes.split(",") if name]
    except KeyError as exc:
        parser.error(exc.args[0])
    text = sys.stdin.read() if args.input == "-" else open(args.input).read()
    chunks = text.split(f"\n{SPLIT_MARKER}\n") if args.split_input_file else [text]
    target = targets.get(args.target)
    if args.fused_attention:
        target = targets.fused_attention_only(target)
    try:
        options = target.lowering_for(args.attention_precision)
    except KvattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = False
    for index, chunk in enumerate(chunks):
        if index:
            print(SPLIT_MARKER)
        try:
            result = run_passes(chunk, passes, options)
            if args.compile_to:
                result = compiler.iree_compile(result, target.flags() + [f"--compile-to={args.compile_to}"]).decode()
            print(result)
        except (KvattnError, ir.MLIRError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def run_passes(text: str, passes: list[registry.Pass], options: LoweringOptions) -> str:
    context = onnx_import.make_context()
    with context, ir.Location.unknown():
        module = ir.Module.parse(text)
        for p in passes:
            p.apply(module, options)
        module.operation.verify()
        return str(module)


if __name__ == "__main__":
    sys.exit(main())
