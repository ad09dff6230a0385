"""An optional PyTorch implementation of the same model, to time against.

Used only by `launch/benchmark.py --peer torch` and its tests; the product never
imports it. Install with `pip install -e '.[peer]'`.
"""
