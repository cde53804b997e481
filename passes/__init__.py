"""kvattn.passes: analyses and rewrites on the kvattn dialect, the pass registry and the pipeline."""
