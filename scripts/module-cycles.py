#!/usr/bin/env python3
"""Fails when the modules of a Rust crate import each other in a circle.

    scripts/module-cycles.py src native/src

Each argument is a crate's source root (the folder of its lib.rs). A module
is a file (`a.rs`, `a/mod.rs`, `a/b.rs`); module A depends on module B when
A names a path into B: `use crate::b::…`, `crate::b::f()`, `super::…`,
`self::…`, or a child module's name at the start of a `use`. A path is
charged to the deepest module it names. Test modules (`*tests.rs`,
`tests/`) are left out: they may reach anywhere. A parent's `mod child;` is
not a dependency. Prints every circle (strongly connected set of modules)
and exits 1 if there is one; with --graph prints the edges too.
"""

import re
import sys
from pathlib import Path

USE = re.compile(r"\buse\s+([^;]+);", re.S)
PATH = re.compile(r"\b((?:crate|super|self)(?:::\w+)+)")


def strip_comments_and_strings(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r'r(#*)".*?"\1', '""', text, flags=re.S)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text, flags=re.S)


def without_test_items(text: str) -> str:
    """Drops `#[cfg(test)] mod … { … }` blocks (unit tests inside a file)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        out.append(text[i:m.start()])
        i = j
    out.append(text[i:])
    return "".join(out)


def expand_use_tree(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+", "", tree)
    tree = re.sub(r"\bas\w+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        return [tree]
    prefix, inner = tree[:brace], tree[brace + 1:tree.rfind("}")]
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(inner):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(inner[start:k])
            start = k + 1
    parts.append(inner[start:])
    return [p for part in parts if part for p in expand_use_tree(prefix + part)]


def module_of(root: Path, file: Path) -> tuple[str, ...]:
    rel = file.relative_to(root).with_suffix("")
    parts = rel.parts
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def resolve(path: str, here: tuple[str, ...], modules: set) -> tuple[str, ...] | None:
    segs = path.split("::")
    base: tuple[str, ...]
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] == "self":
        base, segs = here, segs[1:]
    elif segs[0] == "super":
        base = here
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
    elif here + (segs[0],) in modules:
        base = here
    else:
        return None
    best = base
    for seg in segs:
        if base + (seg,) in modules:
            base = base + (seg,)
            best = base
        else:
            break
    return best


def is_test(root: Path, file: Path) -> bool:
    rel = file.relative_to(root)
    return file.stem.endswith("tests") or "tests" in rel.parts[:-1] or file.stem == "tests"


def graph(root: Path) -> dict:
    files = [f for f in sorted(root.rglob("*.rs")) if not is_test(root, f)]
    modules = {module_of(root, f) for f in files}
    edges: dict = {m: set() for m in modules}
    for f in files:
        here = module_of(root, f)
        text = without_test_items(strip_comments_and_strings(f.read_text()))
        paths = [p for u in USE.findall(text) for p in expand_use_tree(u)]
        paths += PATH.findall(text)
        for p in paths:
            target = resolve(p, here, modules)
            if target is not None and target != here and target != ():
                if here[:len(target)] == target and len(target) < len(here):
                    # a child naming its ancestor: still a dependency
                    pass
                edges[here].add(target)
    return edges


def cycles(edges: dict) -> list[list]:
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def name(m: tuple) -> str:
    return "::".join(m) or "crate"


def main(argv: list[str]) -> int:
    show = "--graph" in argv
    roots = [a for a in argv if a != "--graph"]
    if not roots:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    bad = False
    for r in roots:
        root = Path(r)
        if not (root / "lib.rs").is_file():
            print(f"{r}: no lib.rs", file=sys.stderr)
            return 2
        edges = graph(root)
        if show:
            for m in sorted(edges):
                print(f"{r}: {name(m)} -> {', '.join(name(t) for t in sorted(edges[m]))}")
        found = cycles(edges)
        for comp in found:
            bad = True
            print(f"{r}: import circle among {len(comp)} modules: {', '.join(name(m) for m in comp)}")
        if not found:
            print(f"{r}: {len(edges)} modules, no import circle")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
