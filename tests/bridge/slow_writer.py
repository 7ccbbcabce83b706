"""A misbehaving writer: copies frames byte by byte straight into a ``new/`` folder.

``python slow_writer.py SRC_DIR DEST_NEW_DIR DELAY`` writes each file of SRC_DIR (in name
order) into DEST_NEW_DIR one byte at a time, flushing after every byte and sleeping
DELAY seconds between bytes, and prints ``done <name>`` when a file is complete.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> None:
    src, dest, delay = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    for path in sorted(src.iterdir()):
        data = path.read_bytes()
        with open(dest / path.name, "wb", buffering=0) as f:
            for i in range(len(data)):
                f.write(data[i : i + 1])
                time.sleep(delay)  # the misbehaviour under test: a slow, torn write
        print(f"done {path.name}", flush=True)


if __name__ == "__main__":
    main()
