"""Settings of the fast label path (baked density grid + top-k label compositing), in one place.

instance-render, instance-loc, instance-export and the end-of-training bake must agree on them: the grid is cached per
resolution, and InstanceLoc only gives a pixel the id instance-render shows when both march the same samples. This
module imports nothing heavy, so the CLIs can use it for their defaults and still fail fast on bad input.
"""

DEFAULT_GRID_RESOLUTION = 256
"""Baked density grid resolution (one cache file per checkpoint and resolution). On a 100-frame room: 160 -> scene PQ
0.80 vs the full render's 0.85, 256 -> 0.85, 384 -> 0.86 (bake 57 s, 226 MB)."""

DEFAULT_NUM_SAMPLES = 192
"""Samples per ray through the baked grid; the label field is then read at the heaviest few of them."""

DEFAULT_RGB_TOP_K = 1
"""Samples per ray at which the fast camera outputs (viewer, ns-render) read the colour head: the heaviest one. The
colour head costs about as much per sample as the label field; reading 8 samples tripled a 512x384 view's time."""

RENDER_LABEL_TOP_K = 4
"""Samples per ray at which the fast path (viewer, ns-render, instance-render, instance-loc, the end-of-training
merge) reads the label field, at most the model's training label_top_k (8). The label reads are most of a fast frame
(320x240, 1 thread: 1.9 s at 8, 0.8 s at 4, march 0.8 s), and on the demo room (1,000 iterations, 20 novel views,
things PQ against ground truth) 4 scored 0.668 against 0.627 with 8 (benchmarks/render_speed.py)."""
