#!/usr/bin/env python3
"""Writes the example job's data: model.bin (the MLP's int8 weights and
i32 biases, 2,536 bytes, laid out as the README says) and inputs-N.bin
(each a batch of 256 int8 input vectors of 64), drawn from a seeded
xorshift so anyone regenerates the same bytes. The weights are not trained;
their scales are those of a real layer (with the job's multiplier and
shift, about half the hidden units are cut by the ReLU)."""

import struct
import sys
from pathlib import Path

BATCH = 256
TASKS = 4


class XorShift:
    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFF

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def between(self, low, high):
        return low + self.next() % (high - low + 1)


def int8s(rng, count, low, high):
    return struct.pack(f"{count}b", *(rng.between(low + 128, high + 128) - 128 for _ in range(count)))


def i32s(rng, count, low, high):
    return struct.pack(f"<{count}i", *(rng.between(low + 2**31, high + 2**31) - 2**31 for _ in range(count)))


def main(folder):
    rng = XorShift(0x1D1E6A1D)
    model = int8s(rng, 32 * 64, -64, 63) + i32s(rng, 32, -2000, 2000)
    model += int8s(rng, 10 * 32, -64, 63) + i32s(rng, 10, -500, 500)
    assert len(model) == 2536
    (folder / "model.bin").write_bytes(model)
    for task in range(TASKS):
        (folder / f"inputs-{task}.bin").write_bytes(int8s(rng, BATCH * 64, -128, 127))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
