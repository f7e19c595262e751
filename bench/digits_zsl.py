"""A small real-image zero-shot task from the handwritten digits that scikit-learn ships
(``sklearn.datasets.load_digits``: 1797 scanned 8x8 images, no download), written in zeromamba's
folder format.

Each digit class is described by the seven segments of a seven-segment display that draw it
(a top, b upper right, c lower right, d bottom, e lower left, f upper left, g middle), plus
"closed loop" and "two loops": handwriting follows these shapes only roughly, which is what
makes it a real attribute-transfer task. Digits 3, 5 and 9 are unseen (chance 33.3%); every one
of their attribute values is shown by some seen digit. Seen digits: 80% of each class's images in
trainval, 20% in test_seen.

    python bench/digits_zsl.py OUT_DIR
    zeromamba train --data OUT_DIR
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image

SEGMENTS = "abcdefg"
DIGIT_SEGMENTS = {
    0: "abcdef",
    1: "bc",
    2: "abdeg",
    3: "abcdg",
    4: "bcfg",
    5: "acdfg",
    6: "acdefg",
    7: "abc",
    8: "abcdefg",
    9: "abcdfg",
}
LOOPS = {0: 1, 6: 1, 8: 2, 9: 1}
ATTRIBUTES = [
    "segment top",
    "segment upper right",
    "segment lower right",
    "segment bottom",
    "segment lower left",
    "segment upper left",
    "segment middle",
    "closed loop",
    "two loops",
]
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
UNSEEN = (3, 5, 9)


def attribute_row(digit: int) -> list[int]:
    segs = [int(s in DIGIT_SEGMENTS[digit]) for s in SEGMENTS]
    return segs + [int(LOOPS.get(digit, 0) >= 1), int(LOOPS.get(digit, 0) >= 2)]


def write(out: str, seed: int = 0) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "classes.txt"), "w") as f:
        f.write("\n".join(NAMES) + "\n")
    with open(os.path.join(out, "attributes.csv"), "w") as f:
        f.write("class," + ",".join(ATTRIBUTES) + "\n")
        f.writelines(
            name + "," + ",".join(map(str, attribute_row(d))) + "\n" for d, name in enumerate(NAMES)
        )
    splits: dict[str, list[str]] = {"trainval": [], "test_seen": [], "test_unseen": []}
    for d, name in enumerate(NAMES):
        os.makedirs(os.path.join(out, "images", name), exist_ok=True)
        idx = np.flatnonzero(digits.target == d)
        rel = []
        for i in idx:
            path = f"{name}/{i:04d}.png"
            Image.fromarray(images[i], mode="L").save(os.path.join(out, "images", path))
            rel.append(path)
        if d in UNSEEN:
            splits["test_unseen"] += rel
        else:
            order = rng.permutation(len(rel))
            cut = round(0.8 * len(rel))
            splits["trainval"] += [rel[j] for j in sorted(order[:cut])]
            splits["test_seen"] += [rel[j] for j in sorted(order[cut:])]
    for split, rows in splits.items():
        with open(os.path.join(out, f"{split}.txt"), "w") as f:
            f.write("\n".join(rows) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    write(a.out, a.seed)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
