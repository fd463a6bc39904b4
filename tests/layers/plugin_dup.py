#!/usr/bin/env python3
"""How much of the plugins is shared with another plugin.

A line counts as shared when it sits in a run of at least 6 significant lines
(blank lines, comments, includes and lone punctuation skipped) that also
stands, in the same order, in another plugin's files. Before comparing, each
plugin's own prefix (qw_, eb_, EB1_, ...) becomes P_, string literals become
S and numbers N, so renamed copies still match.

  tests/layers/plugin_dup.py [--max PCT] [plugins-dir]

Prints one line per file and a TOTAL line; with --max, exits 1 when the
total share is above PCT (make test runs it with the bound the protocol
layer promised: 8%).
"""
import collections
import os
import re
import sys

RUN = 6


def norm(line, prefixes):
    s = line.strip()
    if not s or s.startswith(("//", "/*", "*", "#include")):
        return None
    if re.fullmatch(r"[{}();,\s]*", s):
        return None
    for p in prefixes:
        s = re.sub(r"\b" + re.escape(p) + r"\d*_", "P_", s, flags=re.I)
    s = re.sub(r'"(\\.|[^"\\])*"', "S", s)
    s = re.sub(r"\b\d+\b", "N", s)
    return re.sub(r"\s+", " ", s)


def main(argv):
    limit = None
    if argv[:1] == ["--max"]:
        limit, argv = float(argv[1]), argv[2:]
    root = argv[0] if argv else "plugins"
    files = {}
    for d in sorted(os.listdir(root)):
        p = os.path.join(root, d)
        if not os.path.isdir(p):
            continue
        for f in sorted(os.listdir(p)):
            if f.endswith((".c", ".h")):
                with open(os.path.join(p, f)) as fh:
                    files[os.path.join(d, f)] = (d, fh.read().splitlines())
    # a plugin's prefixes: its folder name and the prefix most of its static functions use
    seqs, owners = {}, collections.defaultdict(set)
    for k, (plugin, lines) in files.items():
        pre = collections.Counter(m.group(1) for l in lines
                                  for m in [re.match(r"static [^(]*?\b([a-z][a-z0-9]{0,5})_\w+\(", l)] if m)
        prefixes = {plugin} | {p for p, n in pre.most_common(2) if n >= 5}
        seqs[k] = [(i, s) for i, s in ((i, norm(l, prefixes)) for i, l in enumerate(lines)) if s]
        for j in range(len(seqs[k]) - RUN + 1):
            owners[tuple(x[1] for x in seqs[k][j:j + RUN])].add(plugin)
    total = shared = 0
    for k, s in seqs.items():
        plugin, lines = files[k]
        cov = set()
        for j in range(len(s) - RUN + 1):
            if owners[tuple(x[1] for x in s[j:j + RUN])] - {plugin}:
                cov.update(x[0] for x in s[j:j + RUN])
        total += len(lines)
        shared += len(cov)
        print("%-32s %6d lines %5d shared %5.1f%%" % (k, len(lines), len(cov), 100.0 * len(cov) / max(len(lines), 1)))
    pct = 100.0 * shared / max(total, 1)
    print("TOTAL %d lines, %d in runs shared with another plugin = %.1f%%" % (total, shared, pct))
    if limit is not None and pct > limit:
        print("FAIL plugin_dup: %.1f%% of plugin lines are shared, the bound is %.1f%%" % (pct, limit))
        return 1
    if limit is not None:
        print("PASS plugin_dup: %.1f%% of plugin lines are shared (bound %.1f%%)" % (pct, limit))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
