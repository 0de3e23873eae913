#!/usr/bin/env python3
"""Checks the room sizes of the product code (issue 12; docs/ARCHITECTURE.md):
no source file over MAX_FILE lines, no function over MAX_FUNCTION lines.

Usage: check_sizes.py SOURCE_DIR   (exit status 1 and one line per offender)

Functions are found the way Google style lays them out: a definition starts
at column 0 and its body ends with a '}' at column 0. Member functions
defined inside a class body (indented) are not measured; they are short by
convention. Tests are not measured: a test file is a list of cases.
"""
import pathlib
import re
import sys

MAX_FILE = 500
MAX_FUNCTION = 80
ROOMS = ("fs", "cache", "backend", "mountd")

# Lines at column 0 that do not start a function definition.
NOT_A_FUNCTION = re.compile(
    r"^(namespace|class|struct|enum|union|#|//|/\*|\}|extern|using|template|"
    r"static_assert|$)")


def long_functions(lines):
    i = 0
    while i < len(lines):
        line = lines[i]
        if (line and not line[0].isspace() and not NOT_A_FUNCTION.match(line)
                and not line.rstrip().endswith(";")):
            j = i
            while j < len(lines) and not lines[j].rstrip().endswith(("{", ";")):
                j += 1
            # A variable with a braced initializer is not a function.
            if (j < len(lines) and lines[j].rstrip().endswith("{")
                    and "=" not in line.split("(")[0]):
                k = j + 1
                while k < len(lines) and not lines[k].startswith("}"):
                    k += 1
                if k - i + 1 > MAX_FUNCTION:
                    yield i + 1, k - i + 1, line.strip()
                i = k + 1
                continue
        i += 1


def main():
    root = pathlib.Path(sys.argv[1])
    problems = []
    for room in ROOMS:
        for path in sorted((root / room).rglob("*")):
            if path.suffix not in (".cc", ".h"):
                continue
            rel = path.relative_to(root)
            lines = path.read_text().splitlines()
            if len(lines) > MAX_FILE:
                problems.append(f"{rel}: {len(lines)} lines (at most {MAX_FILE})")
            for line_no, length, head in long_functions(lines):
                problems.append(f"{rel}:{line_no}: function of {length} lines "
                                f"(at most {MAX_FUNCTION}): {head[:60]}")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
