#!/usr/bin/env python3
"""Reads and applies the planted bugs of tests/mutation/mutants/*.mut.

A .mut file: '#' lines (the bug, shown in the table), 'key: value' lines,
then one or more pairs of '@@ from' / '@@ to' blocks. Keys:

  promise:  the promise the bug breaks
  where:    a file, or a folder searched as grep -rl would (every .c and .h
            under it: a mutant of a file that moves inside its folder keeps
            working)
  function: (optional) the C function whose body each 'from' block is looked
            for in; '@@ from in NAME' names the function of one block. A
            mutant written against a function keeps applying when the lines
            around it move, and cannot land in another function's copy of
            the same line.
  tests:    the ctest regex of the tests that must catch it
  build:    (optional) the build targets its tests need besides the unit
            and contract programs named by tests (integration tests run the
            binaries; default: flashgate flashgate-spool when one of the
            tests is an integration test)
  pending:  (optional) its catching test is not written yet

Each 'from' block must occur exactly once (in the named function, if any) in
exactly one file under `where`; it is replaced by its 'to' block. Whitespace
is not significant in the match (a run of blanks and newlines matches any
other): a reformatting does not make a mutant stale.

  mutant.py show FILE.mut            key=value lines for run.sh (shell-quoted)
  mutant.py apply FILE.mut TREE      applies it to the tree at TREE; prints the
                                     changed files (relative to TREE)
  mutant.py check FILE.mut TREE      exits 0 if it applies, else says why
  mutant.py check-all DIR TREE       checks every DIR/*.mut against TREE: one
                                     line per mutant, exit 1 if one is stale
"""
import glob
import os
import re
import shlex
import sys


class Stale(Exception):
    """The mutant does not apply to the tree (its lines changed or moved)."""


def parse(path):
    m = {"desc": [], "pairs": [], "name": os.path.basename(path)[:-4]}
    block = None
    cur = None
    with open(path, encoding="utf-8") as fp:
        for line in fp.read().split("\n"):
            if line.startswith("@@ "):
                words = line[3:].split()
                kind = words[0] if words else ""
                if kind == "from":
                    fn = None
                    if len(words) == 3 and words[1] == "in":
                        fn = words[2]
                    elif len(words) != 1:
                        raise SystemExit(f"{path}: '{line}': want '@@ from' or '@@ from in NAME'")
                    cur = {"from": [], "to": [], "function": fn}
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
        if not p["from"].strip():
            raise SystemExit(f"{path}: an empty '@@ from' block")
        if p["function"] is None:
            p["function"] = m.get("function") or None
        if " ".join(p["from"].split()) == " ".join(p["to"].split()):
            raise SystemExit(f"{path}: a '@@ to' block that changes nothing")
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


def pattern(block):
    """The block as a regex in which any run of whitespace matches any other."""
    return re.compile(r"\s+".join(re.escape(w) for w in block.split()))


def bodies(text, fn):
    """[(start, end)] of the bodies of the C functions named fn in text: a
    definition starts a line (its name, or its return type then its name),
    its parameter list is followed by the body's '{', and the body ends at
    the first '}' that starts a line (the layout clang-format keeps here).
    A prototype (';' after the parameter list) is not a body."""
    out = []
    head = re.compile(r"^(?:[A-Za-z_][^;{}()\n=]*?\b)?" + re.escape(fn) + r"\s*\(", re.M)
    for mt in head.finditer(text):
        depth, i = 1, mt.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text) or text[i] != "{":
            continue
        end = text.find("\n}", i)
        if end >= 0:
            out.append((i, end + 2))
    return out


def plan(m, tree):
    """[(relpath, start, end, to)], or raises Stale with the reason."""
    files = candidates(tree, m["where"])
    if not files:
        raise Stale(f"{m['name']}: nothing under {m['where']}")
    steps = []
    for p in m["pairs"]:
        rx = pattern(p["from"])
        hits = []
        for rel in files:
            with open(os.path.join(tree, rel), encoding="utf-8") as fp:
                text = fp.read()
            spans = bodies(text, p["function"]) if p["function"] else [(0, len(text))]
            for a, b in spans:
                for mt in rx.finditer(text, a, b):
                    hits.append((rel, mt.start(), mt.end()))
        if len(hits) != 1:
            first = p["from"].strip().split("\n")[0].strip()
            inside = f" in {p['function']}()" if p["function"] else ""
            found = sorted({h[0] for h in hits})
            raise Stale(f"{m['name']}: '{first}' found {len(hits)} times{inside} under "
                        f"{m['where']}{' (' + ', '.join(found) + ')' if found else ''}"
                        f" (wanted once)")
        steps.append((hits[0][0], hits[0][1], hits[0][2], p["to"].strip()))
    return steps


def apply(m, tree):
    steps = plan(m, tree)
    changed = []
    # later spans first, so earlier offsets stay valid
    for rel, a, b, to in sorted(steps, key=lambda s: (s[0], -s[1])):
        full = os.path.join(tree, rel)
        with open(full, encoding="utf-8") as fp:
            text = fp.read()
        with open(full, "w", encoding="utf-8") as fp:
            fp.write(text[:a] + to + text[b:])
        if rel not in changed:
            changed.append(rel)
    return changed


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    cmd, path = sys.argv[1], sys.argv[2]
    if cmd == "check-all":
        tree = sys.argv[3]
        stale = 0
        muts = sorted(glob.glob(os.path.join(path, "*.mut")))
        for f in muts:
            m = parse(f)
            try:
                plan(m, tree)
                print(f"ok     {m['name']}")
            except Stale as e:
                print(f"STALE  {e}")
                stale += 1
        print(f"{len(muts) - stale} of {len(muts)} mutants apply")
        sys.exit(1 if stale or not muts else 0)
    m = parse(path)
    if cmd == "show":
        print(f"M_NAME={shlex.quote(m['name'])}")
        print(f"M_DESC={shlex.quote(' '.join(m['desc']))}")
        print(f"M_PROMISE={shlex.quote(m.get('promise', ''))}")
        print(f"M_TESTS={shlex.quote(m['tests'])}")
        print(f"M_BUILD={shlex.quote(m.get('build', ''))}")
        print(f"M_PENDING={shlex.quote(m.get('pending', ''))}")
        return
    tree = sys.argv[3]
    try:
        if cmd == "check":
            plan(m, tree)
            return
        if cmd != "apply":
            raise SystemExit(__doc__)
        print("\n".join(apply(m, tree)))
    except Stale as e:
        raise SystemExit(str(e))


if __name__ == "__main__":
    main()
