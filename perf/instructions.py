"""Instructions per proxied request in perf/hotpath.py, counted by callgrind.

Wall-clock timings on a shared two-core machine move by 10% from one run to
the next; instruction counts do not, so they judge a hot-path change in
one try. Two runs with different iteration counts are subtracted, which
cancels start-up and warm-up. Needs valgrind (apt-get install valgrind).

    python perf/instructions.py [--routers N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HOTPATH = Path(__file__).resolve().parent / "hotpath.py"
#: Iteration counts of the two runs; their difference is what is counted.
SHORT, LONG = 1000, 6000


def count(iterations: int, routers: int) -> int:
    """Instructions callgrind counts for one whole run of the microbenchmark."""
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    argv += [sys.executable, str(HOTPATH), "--iterations", str(iterations)]
    argv += ["--routers", str(routers)]
    # A fixed hash seed: set and dict probing, hence the count, repeat exactly.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    # Under callgrind the 6,000 requests take about a minute; ten is a hang.
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=True, timeout=600)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{result.stderr}")
    return int(found.group(1))


def main() -> int:
    """Print the instructions per proxied request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routers", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is missing: apt-get install valgrind", file=sys.stderr)
        return 2
    per_request = (count(LONG, args.routers) - count(SHORT, args.routers)) / (LONG - SHORT)
    print(f"{per_request:,.0f} instructions per proxied request ({args.routers} routers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
