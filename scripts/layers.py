#!/usr/bin/env python3
"""Checks the crate's layering: the top-level modules of src/ form no import cycle, and the
security core never names Pingora, directly or through a module of the Pingora shell.

Reads `crate::` paths (and `super::` paths that climb to the crate root) in every .rs file
under src/, unit tests and doc links included: a test or an intra-doc link that reaches up a
layer makes a cycle like any other use. Exit 0 when clean, 1 with the cycles
and the offending lines otherwise. Run: python3 scripts/layers.py [--graph]
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# The security core: plain Rust, decides everything, never names Pingora.
CORE = {
    "apikey", "assertion", "audit", "certs", "config", "console", "control", "identity", "idp", "keys", "machine", "metrics", "netguard",
    "pem", "policy", "redirect", "respond", "route", "runtime", "session", "store",
}
# The Pingora shell and the binary's entry points; they may import the core.
SHELL = {"admin", "cli", "demo", "listeners", "logging", "proxy", "server", "tls"}




def top_module(path):
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def depth_below_root(path):
    """How many `super::` reach the crate root from this file."""
    rel = path.relative_to(SRC)
    parts = list(rel.parts)
    if parts[-1] in ("mod.rs",):
        parts = parts[:-1]
    else:
        parts[-1] = parts[-1].removesuffix(".rs")
    return len(parts)


def expand_use_groups(code):
    """Yields (line, first segment) for each crate-root path, expanding `use crate::{a, b::c}`."""
    for m in re.finditer(r"\bcrate\s*::\s*(\{|[a-z_][a-z0-9_]*)", code):
        line = code.count("\n", 0, m.start()) + 1
        if m.group(1) != "{":
            yield line, m.group(1)
            continue
        depth, j = 1, m.end()
        start = j
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        body = code[start:j - 1]
        # Top-level items of the group: split on commas at brace depth 0.
        level, item = 0, ""
        for ch in body + ",":
            if ch == "{":
                level += 1
            elif ch == "}":
                level -= 1
            if ch == "," and level == 0:
                name = re.match(r"\s*([a-z_][a-z0-9_]*)", item)
                if name and name.group(1) != "self":
                    yield line, name.group(1)
                item = ""
            else:
                item += ch


def main():
    modules = {p.name.removesuffix(".rs") for p in SRC.iterdir()
               if (p.suffix == ".rs" and p.name not in ("lib.rs", "main.rs")) or p.is_dir()}
    unknown = modules - CORE - SHELL
    edges = {m: {} for m in modules}
    pingora_uses = []
    for path in sorted(SRC.rglob("*.rs")):
        if path.name in ("lib.rs", "main.rs") and path.parent == SRC:
            continue
        owner = top_module(path)
        code = path.read_text()
        refs = list(expand_use_groups(code))
        climb = depth_below_root(path)
        pattern = r"\b" + r"\s*::\s*".join(["super"] * climb) + r"\s*::\s*([a-z_][a-z0-9_]*)"
        for m in re.finditer(pattern, code):
            refs.append((code.count("\n", 0, m.start()) + 1, m.group(1)))
        for line, target in refs:
            if target in modules and target != owner:
                edges[owner].setdefault(target, f"{path.relative_to(SRC.parent)}:{line}")
        if owner in CORE:
            for m in re.finditer(r"\bpingora(_[a-z]+)?\b", code):
                line = code.count("\n", 0, m.start()) + 1
                pingora_uses.append(f"{path.relative_to(SRC.parent)}:{line}")

    problems = []
    if unknown:
        problems.append(f"modules in neither CORE nor SHELL (add them in scripts/layers.py): {sorted(unknown)}")
    for m in sorted(CORE & modules):
        for target, where in sorted(edges[m].items()):
            if target in SHELL:
                problems.append(f"core module `{m}` imports shell module `{target}` at {where}")
    for where in pingora_uses:
        problems.append(f"core module names pingora at {where}")
    for scc in strongly_connected(edges):
        if len(scc) > 1:
            members = sorted(scc)
            detail = "; ".join(f"{a}->{b} ({edges[a][b]})" for a in members for b in sorted(edges[a]) if b in scc)
            problems.append(f"import cycle among {members}: {detail}")

    if "--graph" in sys.argv:
        for m in sorted(modules):
            layer = "core " if m in CORE else "shell"
            print(f"{layer} {m:10} -> {', '.join(sorted(edges[m])) or '-'}")
    if problems:
        print("\n".join(problems))
        return 1
    print(f"layers ok: {len(modules)} top-level modules, no cycle, core free of pingora")
    return 0


def strongly_connected(edges):
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.add(w)
                if w == v:
                    break
            out.append(scc)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    sys.exit(main())
