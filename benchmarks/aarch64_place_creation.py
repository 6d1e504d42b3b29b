"""How long a fresh emulated aarch64 place takes to make, step by step, and its size (what CI pays
on a new machine; on one that keeps .device-cache/ a second `device create` takes seconds).

    python benchmarks/aarch64_place_creation.py --place /tmp/fresh-aarch64   # as root; DIR must not exist

Runs :func:`create_place` (what ``edge-sam device create aarch64 DIR`` runs) into a new folder,
then once more on the made place (the cached case), and writes a JSON record (``--out``) with the
command, commit, machine and date (benchmarks/records.py). The downloads (Debian's packages, the
aarch64 wheels) depend on the network; the emulated steps on the load, which the record carries.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from edge_sam.machine import load_average_text
from edge_sam.targets.devices.aarch64_place import create_place

from records import record_header, write_record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--place", required=True, help="a folder that does not exist yet")
    parser.add_argument("--keep", action="store_true", help="keep the place afterwards (default: delete it)")
    parser.add_argument("--out", default="docs/results/aarch64_place_creation.json")
    args = parser.parse_args(argv)
    place = Path(args.place)
    if place.exists():
        parser.error(f"{place} exists: give a new folder (this measures a fresh place)")
    header = record_header()
    start = time.perf_counter()
    record = create_place(place)
    fresh_s = time.perf_counter() - start
    start = time.perf_counter()
    create_place(place)
    cached_s = time.perf_counter() - start
    result = {**header, "fresh_s": round(fresh_s), "cached_s": round(cached_s, 1), "steps_s": record["steps_s"],
              "disk_mb": record["disk_mb"], "qemu": record["qemu"], "packages": record["packages"],
              "load_average_at_end": load_average_text()}
    write_record(Path(args.out), result)
    print(json.dumps(result, indent=2, default=str))
    if not args.keep:
        shutil.rmtree(place)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
