"""Crops of real photos that are not dogs.jpg, for choosing a mixed-precision recipe on real photos.

    python benchmarks/sample_photos.py OUT_DIR

scikit-image ships a few public-domain / CC0 photos inside its wheel (the `bench` extra installs
it; nothing is downloaded). Two overlapping crops of each of five give ten held-out images whose
statistics are a real camera's, unlike the synthetic splits, and which share nothing with the
bundled dogs.jpg, so dogs.jpg crops stay an untouched real-photo test set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edge_sam.transforms import read_image, write_image

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")


def write_crops(out: Path) -> list[Path]:
    import skimage  # the `bench` extra

    data = Path(skimage.__file__).parent / "data"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PHOTOS:
        image = read_image(data / name)
        h, w = image.shape[:2]
        for index, (y, x) in enumerate([(0, 0), (h // 2, w // 2)]):  # top-left 3/4 and bottom-right quarter
            path = out / f"{Path(name).stem}_{index}.png"
            write_image(path, np.ascontiguousarray(image[y : y + 3 * h // 4, x : x + 3 * w // 4]))
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(f"wrote {len(write_crops(args.out))} crops to {args.out}")


if __name__ == "__main__":
    main()
