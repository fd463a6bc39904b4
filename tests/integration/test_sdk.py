"""The SDK template: `make plugin NAME=tmpl_check`, run in a scratch copy of the
files it needs (nothing is generated inside the repo), gives a plugin on the
OpenAI-compatible base that is under 200 lines, passes `make test-plugin`
(its kit test) and clang-format as generated, exports one symbol, and serves
through the real gateway."""
import os
import shutil
import subprocess
import tempfile

from lib import ROOT, Gateway, Mock, check, json_reply, run

NAME = "tmpl_check"
# What `make plugin` and `make test-plugin` read: the kit is built from the
# kernel's sources, the plugin against sdk/ (headers, library, template).
NEEDED = ["Makefile", ".clang-format", "sdk", "kernel", "tests/unit/t.h", "tests/unit/plugin_t.h"]


def sh(cmd, cwd):
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=cwd, timeout=600)
    check(p.returncode == 0, "%s\n%s%s" % (cmd, p.stdout[-3000:], p.stderr[-3000:]))
    return p.stdout


def scratch_copy():
    d = tempfile.mkdtemp(prefix="lm-tmpl-")
    for rel in NEEDED:
        src, dst = os.path.join(ROOT, rel), os.path.join(d, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    return d


def test_template_generates_builds_tests_and_serves():
    d = scratch_copy()
    try:
        check_generated(d)
        serve(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    left = subprocess.run("git status --porcelain --untracked-files=all plugins tests/unit",
                          shell=True, capture_output=True, text=True, cwd=ROOT).stdout
    check(NAME not in left, "generated files left in the repo: %s" % left)


def check_generated(d):
    sh("make -s plugin NAME=%s" % NAME, d)
    src = "plugins/%s/%s.c" % (NAME, NAME)
    test = "tests/unit/test_plugin_%s.c" % NAME
    with open(os.path.join(d, src)) as f:
        text = f.read()
    check(text.count("\n") < 200, "the generated plugin has %d lines" % text.count("\n"))
    check('#include "lmoai.h"' in text, "the template uses the OpenAI-compatible base")
    sh("clang-format --dry-run -Werror %s %s" % (src, test), d)
    san = os.environ.get("SAN", "")
    if os.environ.get("LM_SANITIZER") and not san:
        san = "-fsanitize=address,undefined -fno-sanitize-recover=undefined"
    # the scratch copy builds into its own build/ whatever O/PLUGIN_DIR the suite runs with
    out = sh("make -s -j2 test-plugin NAME=%s O=build PLUGIN_DIR=build/plugins OPT='-O0 -g' SAN='%s'"
             % (NAME, san), d)
    check("PASS %s_request" % NAME in out and "PASS %s_stream_every_split" % NAME in out
          and "FAIL" not in out, out)
    so = os.path.join(d, "build/plugins/%s.so" % NAME)
    exported = sh("nm -D --defined-only %s | awk '{print $3}' | grep -v '^_'" % so, d).split()
    check(exported == ["longmen_plugin_entry"], "exports: %s" % exported)


def serve(d):
    mock = Mock()
    mock.routes["/v1/chat/completions"] = lambda h, b: json_reply(h, 200, {
        "id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {
            "role": "assistant", "content": "from template"}, "finish_reason": "normal"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
    gw = Gateway(plugin_dir=os.path.join(d, "build/plugins"),
                 channels="channel t {\n plugin %s\n base_url %s/v1\n models tm\n}\n"
                 % (NAME, mock.url))
    try:
        st, js, raw, _ = gw.chat({"model": "tm", "messages": [{"role": "user", "content": "x"}]})
        check(st == 200 and js["choices"][0]["message"]["content"] == "from template", raw)
        check(js["choices"][0]["finish_reason"] == "stop", raw)
    finally:
        gw.stop()
        mock.close()


run([test_template_generates_builds_tests_and_serves])
