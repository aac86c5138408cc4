"""Reloads and node failures under a steady load: requests, errors, wrong values, p99 and max
latency per phase (the scenario of tests/integration/chaos.py, with real router and node processes).

Run: .venv/bin/python bench/chaos.py [--seconds 5] [--connections 4] [--timeout 300ms]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration import chaos  # noqa: E402
from tests.integration.load import table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--timeout", default="300ms", help="router.timeout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ringcache-chaos-") as tmp:
        report = chaos.run(Path(tmp), phase_seconds=args.seconds,
                           connections=args.connections, timeout=args.timeout)
    print(table(report.phases))
    facts = report.facts
    print(f"\nadd-node reload: moved {facts['add_node_reply']['moved']:.3f} of the keys "
          f"(1/4 = 0.250), digest changed: {facts['digest_changed']}")
    status, body = facts["invalid_reply"]
    print(f"invalid reload: HTTP {status}, ring kept: {facts['digest_kept']}: {body['error']}")
    print(f"restarted node up again after {facts['restarted_up_after']:.2f}s")
    print(f"SIGSTOPped node marked down after {facts['stopped_marked_down_after']:.2f}s, "
          f"back up {facts['back_up_after']:.2f}s after SIGCONT")
    wrong = sum(p.wrong for p in report.phases.values())
    print(f"wrong values in all phases: {wrong}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
