"""The SDK template: `make plugin NAME=x` output builds with the house flags,
passes its own kit test, and loads in the real gateway."""
import os
import subprocess
import tempfile

from lib import BUILD, ROOT, Gateway, Mock, check, json_reply, run

FLAGS = ("-std=c11 -O1 -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes "
         "-Wmissing-prototypes -Wformat=2 -D_GNU_SOURCE").split()


def sh(cmd):
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=ROOT, timeout=120)
    check(p.returncode == 0, "%s\n%s%s" % (cmd, p.stdout, p.stderr))
    return p.stdout


def test_template_builds_tests_and_serves():
    d = tempfile.mkdtemp(prefix="lm-sdk-")
    name = "tmplcheck"
    sh("sed 's/@NAME@/%s/g' sdk/template/plugin.c.in > %s/%s.c" % (name, d, name))
    sh("sed 's/@NAME@/%s/g' sdk/template/test.c.in > %s/test.c" % (name, d))
    san = "-fsanitize=address,undefined" if os.environ.get("LM_SANITIZER") else ""
    sh("cc %s %s -fPIC -shared -fvisibility=hidden -Wl,-z,defs -I sdk -o %s/%s.so %s/%s.c -ljansson"
       % (" ".join(FLAGS), san, d, name, d, name))
    exported = sh("nm -D --defined-only %s/%s.so | awk '{print $3}' | grep -v '^_'" % (d, name)).split()
    check(exported == ["longmen_plugin_entry"], "exports: %s" % exported)
    # the link line of sdk/README.md: the kit, Jansson and libc, nothing more
    sh("cc %s %s -I sdk -I tests/unit -o %s/test %s/test.c %s/liblmtest.a -ljansson"
       % (" ".join(FLAGS), san, d, d, BUILD))
    out = sh("PLUGIN_DIR=%s %s/test" % (d, d))
    check("PASS tmplcheck_request" in out and "FAIL" not in out, out)
    mock = Mock()
    mock.routes["/v1/chat/completions"] = lambda h, b: json_reply(h, 200, {
        "id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {
            "role": "assistant", "content": "from template"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
    gw = Gateway(plugin_dir=d, channels="channel t {\n plugin %s\n base_url %s/v1\n models tm\n}\n"
                 % (name, mock.url))
    try:
        st, js, raw, _ = gw.chat({"model": "tm", "messages": [{"role": "user", "content": "x"}]})
        check(st == 200 and js["choices"][0]["message"]["content"] == "from template", raw)
    finally:
        gw.stop()
        mock.close()


run([test_template_builds_tests_and_serves])
