#!/usr/bin/env python3
"""The documentation check (make test): prints one PASS/FAIL line per check.

- links: every relative Markdown link in README.md, README.zh-CN.md,
  docs/**/*.md and sdk/**/*.md resolves to a file of the repository, and its
  #anchor (if any) to a heading of that file (GitHub's heading ids); a path
  in inline code that names a Markdown file of the repository (`docs/x.md`)
  must exist too.
- readme_sections: README.md and README.zh-CN.md have the same H2 sections in
  the same order, through SECTIONS below (add a row when you add a section to
  both; a section added to one README only fails).
- readme_commands: every shell command (a ```sh/bash block line starting with
  one of COMMANDS, continuation lines joined, comments dropped) of one README
  appears in the other.
- no_shared_refs: no tracked file points at the private notes folder beside the repository
  (or its provider notes),
  documents our users do not have.
- conf_blocks: every ```conf block (the convention of docs/providers.md and
  README.md: a block fenced as conf is a Longmen configuration) in README.md,
  README.zh-CN.md, docs/*.md and docs/zh-CN/*.md passes `longmen -t` on its
  own, with every env:VAR it names set to a dummy value. Skipped (not failed)
  when the binary is not built.

Run from anywhere: python3 tests/docs/check_docs.py [check ...]"""
import glob
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, os.environ.get("O", "build"))
BIN = os.path.join(BUILD, "longmen")
PLUGIN_DIR = os.path.join(ROOT, os.environ.get("PLUGIN_DIR", os.path.join(BUILD, "plugins")))

# English H2 heading of README.md -> its Chinese heading in README.zh-CN.md.
SECTIONS = [
    ("Quick start (Debian 12, as root)", "快速开始（Debian 12，root 用户）"),
    ("The `longmen` command", "`longmen` 命令"),
    ("Endpoints (data plane, default 127.0.0.1:8080)", "接口（数据面，默认 127.0.0.1:8080）"),
    ("Claude Code and the Anthropic SDK", "Claude Code 与 Anthropic SDK"),
    ("Codex and the OpenAI Responses API", "Codex 与 OpenAI Responses API"),
    ("Configuration (`plugins.conf`)", "配置（`plugins.conf`）"),
    ("Keys, quotas and usage", "令牌、额度与用量"),
    ("Web console", "Web 控制台"),
    ("Lua policy scripts", "Lua 策略脚本"),
    ("Response cache", "响应缓存"),
    ("Traces and the request log", "链路追踪与请求日志"),
    ("Layout", "目录结构"),
    ("Tests", "测试"),
    ("License", "许可证"),
]

# First words of the shell commands both READMEs must show alike.
COMMANDS = ("make", "longmen", "build/longmen", "./build/longmen", "curl", "bin/longmen-admin", "kill", "python3")

results = {"passed": 0, "failed": 0}


def report(name, problems):
    if problems:
        print("FAIL %s: %d problem(s)" % (name, len(problems)), flush=True)
        for p in problems[:40]:
            print("     " + p)
        if len(problems) > 40:
            print("     ... and %d more" % (len(problems) - 40))
        results["failed"] += 1
    else:
        print("PASS %s" % name, flush=True)
        results["passed"] += 1


def rel(path):
    return os.path.relpath(path, ROOT)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def tracked_files():
    p = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if p.returncode == 0 and p.stdout:
        names = [n for n in p.stdout.decode("utf-8", "replace").split("\0") if n]
        # new files not yet added still count
        q = subprocess.run(["git", "ls-files", "-z", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True)
        names += [n for n in q.stdout.decode("utf-8", "replace").split("\0") if n]
        return sorted(set(n for n in names if os.path.isfile(os.path.join(ROOT, n))))
    out = []
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if not x.startswith(".") and not x.startswith("build")]
        out += [rel(os.path.join(d, f)) for f in files]
    return sorted(out)


def doc_files():
    names = ["README.md", "README.zh-CN.md"]
    names += sorted(rel(p) for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    names += sorted(rel(p) for p in glob.glob(os.path.join(ROOT, "sdk", "**", "*.md"), recursive=True))
    return [n for n in names if os.path.isfile(os.path.join(ROOT, n))]


def split_blocks(text):
    """[(kind, info, start_line, lines)]: kind 'code' for fenced blocks
    (info = the fence's language), 'text' for the rest."""
    out, cur, kind, info, start = [], [], "text", "", 1
    fence = None
    for i, line in enumerate(text.split("\n"), 1):
        m = re.match(r"^\s*(```+|~~~+)\s*([^\s`]*)", line)
        if fence is None and m:
            out.append((kind, info, start, cur))
            fence, kind, info, start, cur = m.group(1), "code", m.group(2).lower(), i + 1, []
        elif fence is not None and line.strip().startswith(fence) and line.strip().strip(fence[0]) == "":
            out.append((kind, info, start, cur))
            fence, kind, info, start, cur = None, "text", "", i + 1, []
        else:
            cur.append(line)
    out.append((kind, info, start, cur))
    return out


def slug(heading):
    """GitHub's heading id: lower case, markup and punctuation dropped (CJK
    kept), spaces to hyphens."""
    h = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    h = h.replace("`", "").strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def anchors(path):
    ids, seen = set(), {}
    for kind, _, _, lines in split_blocks(read(path)):
        if kind != "text":
            continue
        for line in lines:
            m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if not m:
                continue
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            ids.add(s if n == 0 else "%s-%d" % (s, n))
    return ids


def checks_path_mentions(doc):
    return doc in ("README.md", "README.zh-CN.md") or doc.startswith("docs/zh-CN/")


def strip_inline_code(line):
    return re.sub(r"`[^`]*`", "", line)


def check_links():
    problems = []
    anchor_cache = {}
    for doc in doc_files():
        path = os.path.join(ROOT, doc)
        for kind, _, start, lines in split_blocks(read(path)):
            if kind != "text":
                continue
            for n, line in enumerate(lines, start):
                # `docs/x.md`: a Markdown file of the repository named in code
                # (READMEs and the Chinese docs only: other pages cite files of
                # other projects, e.g. ollama's `docs/api.md`)
                for code in re.findall(r"`([^`\s]+)`", line) if checks_path_mentions(doc) else ():
                    if re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+\.md", code) and not code.startswith(".."):
                        if not (os.path.exists(os.path.join(ROOT, code))
                                or os.path.exists(os.path.join(os.path.dirname(path), code))):
                            problems.append("%s:%d: `%s` names a file that does not exist" % (doc, n, code))
                for target in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", strip_inline_code(line)):
                    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                        continue  # http:, https:, mailto:
                    file_part, _, frag = target.partition("#")
                    dest = path if not file_part else os.path.normpath(os.path.join(os.path.dirname(path), file_part))
                    if file_part.startswith("/") or not dest.startswith(ROOT + os.sep):
                        problems.append("%s:%d: link %s leaves the repository" % (doc, n, target))
                        continue
                    if not os.path.exists(dest):
                        problems.append("%s:%d: link %s: %s does not exist" % (doc, n, target, rel(dest)))
                        continue
                    if frag and dest.endswith(".md"):
                        if dest not in anchor_cache:
                            anchor_cache[dest] = anchors(dest)
                        if frag.lower() not in anchor_cache[dest]:
                            problems.append("%s:%d: link %s: no heading #%s in %s" % (doc, n, target, frag, rel(dest)))
    report("links", problems)


def h2s(path):
    out = []
    for kind, _, _, lines in split_blocks(read(path)):
        if kind == "text":
            out += [line[3:].strip() for line in lines if line.startswith("## ")]
    return out


def check_readme_sections():
    problems = []
    en, zh = h2s(os.path.join(ROOT, "README.md")), h2s(os.path.join(ROOT, "README.zh-CN.md"))
    known_en = [e for e, _ in SECTIONS]
    known_zh = [z for _, z in SECTIONS]
    for h in en:
        if h not in known_en:
            problems.append("README.md: section %r is not in SECTIONS (tests/docs/check_docs.py): "
                            "add it to README.zh-CN.md and map it there" % h)
    for h in zh:
        if h not in known_zh:
            problems.append("README.zh-CN.md: section %r is not in SECTIONS (tests/docs/check_docs.py): "
                            "add it to README.md and map it there" % h)
    for e, z in SECTIONS:
        if e in en and z not in zh:
            problems.append("README.zh-CN.md lacks %r (README.md has %r)" % (z, e))
        if z in zh and e not in en:
            problems.append("README.md lacks %r (README.zh-CN.md has %r)" % (e, z))
    mapped = [dict(SECTIONS).get(h) for h in en if h in known_en]
    zh_known = [h for h in zh if h in known_zh]
    if not problems and mapped != zh_known:
        problems.append("sections are in a different order: README.md %s, README.zh-CN.md %s" % (mapped, zh_known))
    report("readme_sections", problems)


def shell_commands(path):
    cmds = {}
    for kind, info, start, lines in split_blocks(read(path)):
        if kind != "code" or info not in ("sh", "bash", "shell", "console"):
            continue
        joined, first = "", None
        for n, line in enumerate(lines, start):
            s = line.strip()
            if info == "console" and s.startswith("$ "):
                s = s[2:]
            if first is None:
                first = n
            joined += " " + s
            if s.endswith("\\"):
                joined = joined[:-1]
                continue
            cmd = re.sub(r"\s+#.*$", "", joined).strip()
            cmd = re.sub(r"\s+", " ", cmd)
            if cmd.split(" ")[0] in COMMANDS:
                cmds.setdefault(cmd, first)
            joined, first = "", None
    return cmds


def check_readme_commands():
    problems = []
    en = shell_commands(os.path.join(ROOT, "README.md"))
    zh = shell_commands(os.path.join(ROOT, "README.zh-CN.md"))
    if not en:
        problems.append("README.md: no shell command found (the check's parser is broken?)")
    for c, line in sorted(en.items(), key=lambda x: x[1]):
        if c not in zh:
            problems.append("README.md:%d: %r is not in README.zh-CN.md" % (line, c))
    for c, line in sorted(zh.items(), key=lambda x: x[1]):
        if c not in en:
            problems.append("README.zh-CN.md:%d: %r is not in README.md" % (line, c))
    report("readme_commands", problems)


def check_no_shared_refs():
    problems = []
    # a path into the sibling folder of private notes, or its provider notes
    pat = re.compile(r"\.\./" + "shared/|" + "shared/" + r"providers\.md")
    me = rel(os.path.abspath(__file__))
    for name in tracked_files():
        if name == me:
            continue
        try:
            with open(os.path.join(ROOT, name), encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.split("\n"), 1):
            if pat.search(line):
                problems.append("%s:%d: %s" % (name, n, line.strip()[:120]))
    report("no_shared_refs", problems)


def conf_files():
    names = ["README.md", "README.zh-CN.md"]
    names += sorted(rel(p) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
    names += sorted(rel(p) for p in glob.glob(os.path.join(ROOT, "docs", "zh-CN", "*.md")))
    return [n for n in names if os.path.isfile(os.path.join(ROOT, n))]


def check_conf_blocks():
    if not os.access(BIN, os.X_OK):
        print("PASS conf_blocks (skipped: %s is not built)" % rel(BIN), flush=True)
        results["passed"] += 1
        return
    problems, count, zh_count = [], 0, 0
    tmp = tempfile.mkdtemp(prefix="lm-docs-")
    for doc in conf_files():
        for kind, info, start, lines in split_blocks(read(os.path.join(ROOT, doc))):
            if kind != "code" or info != "conf":
                continue
            count += 1
            if "zh-CN" in doc:
                zh_count += 1
            text = "\n".join(lines) + "\n"
            if not re.search(r"^\s*listen\s", text, re.M):
                text = "listen 127.0.0.1:1\n" + text  # as test_cli: never a real port
                offset = 1
            else:
                offset = 0
            env = dict(os.environ)
            for var in re.findall(r"env:([A-Za-z_][A-Za-z0-9_]*)", text):
                env[var] = "dummy-docs-key-123456"
            path = os.path.join(tmp, "block.conf")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            p = subprocess.run([BIN, "-t", "-c", path, "-p", PLUGIN_DIR], capture_output=True, text=True,
                               timeout=30, cwd=ROOT, env=env)
            out = p.stdout + p.stderr
            if p.returncode != 0 or "is ok" not in out:
                msg = " | ".join(line for line in out.splitlines() if "[info]" not in line)[:400]
                # map block.conf:N to the document's line
                msg = re.sub(r"block\.conf:(\d+)", lambda m: "%s:%d" % (doc, start + int(m.group(1)) - 1 - offset),
                             msg.replace(path, "block.conf"))
                problems.append("%s:%d: ```conf block fails longmen -t: %s" % (doc, start, msg))
    if zh_count < 5:
        problems.append("only %d ```conf blocks in the Chinese docs (expected the README's and each manual's)"
                        % zh_count)
    report("conf_blocks (%d blocks)" % count, problems)


CHECKS = {"links": check_links, "readme_sections": check_readme_sections,
          "readme_commands": check_readme_commands, "no_shared_refs": check_no_shared_refs,
          "conf_blocks": check_conf_blocks}

if __name__ == "__main__":
    want = sys.argv[1:] or list(CHECKS)
    for name in want:
        CHECKS[name]()
    print("%d passed, %d failed" % (results["passed"], results["failed"]))
    sys.exit(1 if results["failed"] else 0)
