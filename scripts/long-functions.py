#!/usr/bin/env python3
"""Fails when a Rust function outside tests is longer than LIMIT lines.

    scripts/long-functions.py 60 src standin/src

Test code is skipped: files named *_tests.rs and items under #[cfg(test)].
A function's length runs from its `fn` line to its closing brace. Braces in
strings (raw and multi-line ones too), chars and comments do not count.
"""

import re
import sys
from pathlib import Path

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?((const|async|unsafe|extern\s+\"[^\"]*\")\s+)*fn\s+(\w+)")
CFG_TEST = re.compile(r"^\s*#\[cfg\(test\)\]")


def code_only(text: str) -> list[str]:
    """The file's lines with strings, chars and comments blanked out."""
    out, i, n = [], 0, len(text)
    buf = []
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            skipped = text[i:n if j < 0 else j + 2]
            buf.append("\n" * skipped.count("\n"))
            i = n if j < 0 else j + 2
        elif (m := re.match(r'b?r(#*)"', text[i:i + 300])) and (i == 0 or not text[i - 1].isalnum()):
            close = '"' + m.group(1)
            j = text.find(close, i + m.end())
            skipped = text[i:n if j < 0 else j + len(close)]
            buf.append("\n" * skipped.count("\n"))
            i = n if j < 0 else j + len(close)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            buf.append("\n" * text[i:j].count("\n"))
            i = j + 1
        elif c == "'" and (m := re.match(r"'(\\.[^']*|[^'\\])'", text[i:i + 12])):
            i += m.end()  # a char literal; a lifetime has no closing quote
        else:
            buf.append(c)
            i += 1
    out = "".join(buf).split("\n")
    return out


def block_end(code: list[str], start: int) -> int:
    """The line that closes the first brace opened at or after `start`
    (or the line ending the item with `;` if none opens first)."""
    depth, opened = 0, False
    for j in range(start, len(code)):
        depth += code[j].count("{") - code[j].count("}")
        opened = opened or "{" in code[j]
        if opened and depth <= 0:
            return j
        if not opened and code[j].rstrip().endswith(";"):
            return j
    return len(code) - 1


def long_functions(path: Path, limit: int) -> list[tuple[int, str]]:
    raw = path.read_text(encoding="utf-8").split("\n")
    code = code_only("\n".join(raw))
    found, i = [], 0
    while i < len(code):
        if CFG_TEST.match(raw[i]):
            i = block_end(code, i + 1) + 1  # the test item, whatever it is
            continue
        m = FN.match(code[i])
        if m:
            end = block_end(code, i)
            if end - i + 1 > limit:
                found.append((end - i + 1, f"{path}:{i + 1} {m.group(5)} is {end - i + 1} lines"))
            i = end + 1
            continue
        i += 1
    return found


def main() -> int:
    limit = int(sys.argv[1])
    found = []
    for root in sys.argv[2:]:
        for path in sorted(Path(root).rglob("*.rs")):
            if not path.name.endswith("_tests.rs"):
                found += long_functions(path, limit)
    for _, text in sorted(found, reverse=True):
        print(text)
    if found:
        print(f"{len(found)} function(s) over {limit} lines: split them into named steps", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
