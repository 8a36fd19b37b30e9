#!/usr/bin/env python3
"""The longest functions in src/ (test modules aside): `fn-lengths.py [DIR] [N]`.
A function runs from its `fn` line to the closing brace at its indentation."""
import os, re, sys

root = sys.argv[1] if len(sys.argv) > 1 else "src"
top = int(sys.argv[2]) if len(sys.argv) > 2 else 10
fn_re = re.compile(r"^(\s*)(pub(\([a-z]+\))? )?(const )?(unsafe )?fn (\w+)")
found = []
for d, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs") or f == "tests.rs":
            continue
        path = os.path.join(d, f)
        lines = open(path).read().split("\n")
        in_tests = False
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("#[cfg(test)]"):
                break
            m = fn_re.match(line)
            if m and not line.rstrip().endswith(";"):
                indent = m.group(1)
                j = i + 1
                while j < len(lines) and not (lines[j].startswith(indent + "}") and len(lines[j]) - len(lines[j].lstrip()) == len(indent)):
                    j += 1
                found.append((j - i + 1, f"{path}:{i+1}", m.group(6)))
            i += 1
found.sort(reverse=True)
for n, where, name in found[:top]:
    print(f"{n:4} {name:28} {where}")
