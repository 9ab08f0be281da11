#!/usr/bin/env python3
"""Reads and applies the planted bugs of tests/mutation/mutants/*.mut.

A .mut file: '#' lines (the bug, shown in the table), 'key: value' lines
(promise, where, tests, pending), then one or more pairs of '@@ from' /
'@@ to' blocks. Each 'from' block must occur exactly once in exactly one file
under `where` (a file, or a folder searched as grep -rlF would: so a mutant of
a file that moves inside its folder keeps working); it is replaced by its
'to' block.

  mutant.py show FILE.mut            key=value lines for run.sh (shell-quoted)
  mutant.py apply FILE.mut TREE      applies it to the tree at TREE; prints the
                                     changed files (relative to TREE)
  mutant.py check FILE.mut TREE      exits 0 if it applies, else says why
"""
import os
import shlex
import sys


def parse(path):
    m = {"desc": [], "pairs": [], "name": os.path.basename(path)[:-4]}
    block = None
    cur = None
    with open(path, encoding="utf-8") as fp:
        for line in fp.read().split("\n"):
            if line.startswith("@@ "):
                kind = line[3:].strip()
                if kind == "from":
                    cur = {"from": [], "to": []}
                    m["pairs"].append(cur)
                elif kind != "to" or cur is None:
                    raise SystemExit(f"{path}: '@@ to' without '@@ from'")
                block = kind
                continue
            if block:
                cur[block].append(line)
            elif line.startswith("#"):
                m["desc"].append(line[1:].strip())
            elif ":" in line:
                k, v = line.split(":", 1)
                m[k.strip()] = v.strip()
    for p in m["pairs"]:
        for k in ("from", "to"):
            while p[k] and p[k][-1] == "":
                p[k].pop()
            p[k] = "\n".join(p[k])
        if not p["from"]:
            raise SystemExit(f"{path}: an empty '@@ from' block")
    for k in ("where", "tests"):
        if not m.get(k):
            raise SystemExit(f"{path}: no '{k}:' line")
    if not m["pairs"]:
        raise SystemExit(f"{path}: no '@@ from' block")
    return m


def candidates(tree, where):
    root = os.path.join(tree, where)
    if os.path.isfile(root):
        return [where]
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".") and not x.startswith("build")]
        for f in files:
            if f.endswith((".c", ".h")):
                out.append(os.path.relpath(os.path.join(d, f), tree))
    return sorted(out)


def plan(m, tree):
    """[(relpath, from, to)], or raises SystemExit with the reason."""
    files = candidates(tree, m["where"])
    if not files:
        raise SystemExit(f"{m['name']}: nothing under {m['where']}")
    steps = []
    for p in m["pairs"]:
        hits = []
        for rel in files:
            with open(os.path.join(tree, rel), encoding="utf-8") as fp:
                n = fp.read().count(p["from"])
            if n:
                hits.append((rel, n))
        if len(hits) != 1 or hits[0][1] != 1:
            first = p["from"].strip().split("\n")[0]
            raise SystemExit(f"{m['name']}: '{first}' found {hits or 'nowhere'} under "
                             f"{m['where']} (wanted once in one file)")
        steps.append((hits[0][0], p["from"], p["to"]))
    return steps


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    cmd, path = sys.argv[1], sys.argv[2]
    m = parse(path)
    if cmd == "show":
        print(f"M_NAME={shlex.quote(m['name'])}")
        print(f"M_DESC={shlex.quote(' '.join(m['desc']))}")
        print(f"M_PROMISE={shlex.quote(m.get('promise', ''))}")
        print(f"M_TESTS={shlex.quote(m['tests'])}")
        print(f"M_PENDING={shlex.quote(m.get('pending', ''))}")
        return
    tree = sys.argv[3]
    steps = plan(m, tree)
    if cmd == "check":
        return
    if cmd != "apply":
        raise SystemExit(__doc__)
    changed = []
    for rel, frm, to in steps:
        full = os.path.join(tree, rel)
        with open(full, encoding="utf-8") as fp:
            text = fp.read()
        with open(full, "w", encoding="utf-8") as fp:
            fp.write(text.replace(frm, to, 1))
        if rel not in changed:
            changed.append(rel)
    print("\n".join(changed))


if __name__ == "__main__":
    main()
