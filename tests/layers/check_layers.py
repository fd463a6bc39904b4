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


def find_cycle(graph):
    """One cycle of the module graph as a list of modules, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {m: WHITE for m in graph}
    stack = []

    def visit(m):
        color[m] = GREY
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if color.get(n, WHITE) == GREY:
                return stack[stack.index(n):] + [n]
            if color.get(n, WHITE) == WHITE:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        color[m] = BLACK
        return None

    for m in sorted(graph):
        if color[m] == WHITE:
            found = visit(m)
            if found:
                return found
    return None


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
    cycle = find_cycle(graph)
    if cycle:
        print("FAIL layers: no include cycle between kernel modules")
        print("     cycle: " + " -> ".join("kernel/" + m for m in cycle))
    else:
        print("PASS layers: no include cycle between kernel modules")
    return 0 if ok and not cycle else 1


if __name__ == "__main__":
    sys.exit(main())
