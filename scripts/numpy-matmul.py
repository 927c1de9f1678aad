#!/usr/bin/env python3
"""The machine's f32 matrix-multiply rate through numpy (OpenBLAS), as a
yardstick beside burn's own: prints GFLOP/s of a 2048^3 product."""
import time

import numpy as np

n = 2048
a = np.random.rand(n, n).astype(np.float32)
b = np.random.rand(n, n).astype(np.float32)
a @ b
calls, start = 0, time.perf_counter()
while time.perf_counter() - start < 3.0:
    a @ b
    calls += 1
print(f"{2 * n**3 * calls / (time.perf_counter() - start) / 1e9:.1f}")
