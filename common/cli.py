"""Command-line conventions shared by the entry points: bad input is one line, exit 2."""

from __future__ import annotations

import argparse
import sys

USAGE_ERROR = 2


class UsageError(Exception):
    """Bad input found after parsing (a file, a value that does not fit another): the entry
    point prints it as one ``error: ...`` line and exits with USAGE_ERROR."""


def report_usage_error(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return USAGE_ERROR


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one ``error: ...`` line on stderr, exit code 2,
    without the usage block."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
