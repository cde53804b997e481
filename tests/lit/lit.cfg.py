# lit configuration for kvattn's IR tests: `// RUN: kvattn-opt %s --passes=... | filecheck %s`.
import os

import lit.formats

config.name = "kvattn"
config.test_format = lit.formats.ShTest()
config.suffixes = [".mlir"]
config.test_source_root = os.path.dirname(__file__)
config.environment["PATH"] = os.environ["PATH"]
config.excludes = ["lit.cfg.py", "Inputs"]
