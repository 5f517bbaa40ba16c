#!/usr/bin/env python3
"""Run smtpgate's integration tests.

    python3 tests/integration/run.py --binary PATH [--asan] [-k PATTERN] [-v]

Discovers tests/integration/test_*.py (unittest), runs them and ends with the
line `N passed, N failed` (`, N skipped` when some were skipped).  Exit code 0
only when nothing failed (errors count as failures).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True, help="path to the smtpgate binary")
    ap.add_argument("--asan", action="store_true",
                    help="binary built with ASan/UBSan: fail a test whose smtpgate reported errors")
    ap.add_argument("-k", action="append", default=[], metavar="PATTERN",
                    help="only tests whose name matches (substring or fnmatch); repeatable")
    ap.add_argument("-v", action="store_true", help="verbose unittest output")
    args = ap.parse_args()

    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        print("not an executable: %s" % binary, file=sys.stderr)
        return 2
    # run a private copy, so a rebuild during the run cannot swap it mid-way
    tmp = tempfile.mkdtemp(prefix="sgit-bin-")
    copy = os.path.join(tmp, "smtpgate")
    shutil.copy2(binary, copy)
    os.environ["SMTPGATE_BINARY"] = copy
    if args.asan:
        os.environ["SMTPGATE_ASAN"] = "1"
        os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    sys.path.insert(0, HERE)

    import harness  # noqa: E402  (after the environment is set)

    loader = unittest.TestLoader()
    if args.k:
        loader.testNamePatterns = [p if any(c in p for c in "*?[") else "*%s*" % p
                                   for p in args.k]
    suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)

    start = time.monotonic()
    runner = unittest.TextTestRunner(verbosity=2 if args.v else 1, stream=sys.stdout)
    try:
        result = runner.run(suite)
    finally:
        harness.kill_leftovers()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - start

    # a test can fail and then also error in its clean-up: count it once
    failed = len({id(t) for t, _ in result.failures + result.errors} |
                 {id(t) for t in result.unexpectedSuccesses})
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped - len(result.expectedFailures)
    sys.stdout.flush()
    print("# %.1fs" % elapsed)
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    sys.stdout.flush()
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
