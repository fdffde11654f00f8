"""Command-line conventions shared by the entry points: bad input is one line, exit 2."""

from __future__ import annotations

import argparse
import sys

USAGE_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one ``error: ...`` line on stderr, exit code 2,
    without the usage block."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
