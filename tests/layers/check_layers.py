#!/usr/bin/env python3
"""Check the kernel's include graph against kernel/LAYERS.

Every kernel file may include headers of its own folder or of a folder
listed above it in kernel/LAYERS. No cycle may form between modules
(kernel/<folder>/<name>.c and .h are one module). Prints one PASS/FAIL
line per rule and names the two files of every violation.
Usage: check_layers.py [kernel_dir]
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def read_layers(kernel):
    order = []
    with open(os.path.join(kernel, "LAYERS")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                order.append(line.split()[0])
    return {name: i for i, name in enumerate(order)}


def kernel_files(kernel):
    for folder in sorted(os.listdir(kernel)):
        path = os.path.join(kernel, folder)
        if not os.path.isdir(path):
            continue
        for name in sorted(os.listdir(path)):
            if name.endswith((".c", ".h")):
                yield folder + "/" + name


def includes(kernel, rel):
    """Kernel-relative paths of the kernel headers that rel includes."""
    with open(os.path.join(kernel, rel), encoding="utf-8") as f:
        text = f.read()
    for inc in INCLUDE.findall(text):
        if os.path.exists(os.path.join(kernel, inc)):
            yield inc
        elif os.path.exists(os.path.join(kernel, os.path.dirname(rel), inc)):
            yield os.path.normpath(os.path.join(os.path.dirname(rel), inc))


def module(rel):
    return os.path.splitext(rel)[0]


def cycles(graph):
    """Every group of modules that include each other in a cycle (the
    strongly connected components of more than one module, Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []

    def visit(m):
        index[m] = low[m] = len(index)
        stack.append(m)
        on.add(m)
        for n in sorted(graph.get(m, ())):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            group = []
            while True:
                n = stack.pop()
                on.discard(n)
                group.append(n)
                if n == m:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return out


def main():
    kernel = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "kernel")
    rank = read_layers(kernel)
    problems = []
    graph = {}
    for rel in kernel_files(kernel):
        folder = rel.split("/")[0]
        if folder not in rank:
            problems.append("%s: folder %s is not in kernel/LAYERS" % (rel, folder))
            continue
        graph.setdefault(module(rel), set())
        for inc in includes(kernel, rel):
            target = inc.split("/")[0]
            if target in rank and rank[target] > rank[folder]:
                problems.append("upward include: kernel/%s (%s) includes kernel/%s (%s)"
                                % (rel, folder, inc, target))
            if module(inc) != module(rel):
                graph[module(rel)].add(module(inc))
    ok = not problems
    print(("PASS" if ok else "FAIL") + " layers: every include points down or sideways")
    for p in problems:
        print("     " + p)
    found = cycles(graph)
    if found:
        print("FAIL layers: no include cycle between kernel modules")
        for group in found:
            print("     modules in a cycle: " + ", ".join("kernel/" + m for m in group))
    else:
        print("PASS layers: no include cycle between kernel modules")
    return 0 if ok and not found else 1


if __name__ == "__main__":
    sys.exit(main())
