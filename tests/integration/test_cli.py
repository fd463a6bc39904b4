"""The longmen command line: -h, -t, config errors that name file and line,
plugins refused at load while the other channels keep serving."""
import os
import shutil
import subprocess
import tempfile

from lib import BUILD, PLUGIN_DIR, ROOT, TEST_PLUGIN_DIR, Gateway, check, run, sanitizer_report

BIN = os.path.join(BUILD, "longmen")


def lm(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=20, env=e, cwd=ROOT)
    check(not sanitizer_report(p.stdout + p.stderr), "sanitizer: " + sanitizer_report(p.stdout + p.stderr))
    return p.returncode, p.stdout + p.stderr


def conf_file(text):
    d = tempfile.mkdtemp(prefix="lm-cli-")
    path = os.path.join(d, "bad.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def test_help():
    rc, out = lm("-h")
    check(rc == 0 and "usage: longmen" in out and "-t" in out, out)
    rc, out = lm("-x")
    check(rc == 2, out)


def test_check_shipped_config():
    rc, out = lm("-t", "-c", os.path.join(ROOT, "plugins.conf"), "-p", PLUGIN_DIR)
    check(rc == 0 and "is ok" in out, out)


def test_config_errors_name_file_and_line():
    cases = [
        ("listen 127.0.0.1:8080\nbogus 1\n", ":2: unknown directive \"bogus\""),
        ("channel a {\n  models m\n}\n", ":3: channel a (line 1) has no plugin"),
        ("channel a {\n  plugin mock\n  models m\n", "is not closed"),
        ("listen nowhere\n", ":1: expected host:port"),
        ("workers 0\n", ":1: workers must be"),
        ("key k short\n", ":1: key k: a client key needs at least 8"),
        ("channel a {\n plugin openai\n models m\n api_key env:LM_SURELY_UNSET_VAR\n}\n",
         ":4: environment variable LM_SURELY_UNSET_VAR is not set"),
        ("channel a {\n plugin mock\n models m\n colour blue\n}\n", ":4: unknown setting \"colour\""),
        ("channel a {\n plugin nosuchplugin\n models m\n}\n", ":1: channel a:"),
        ("channel a {\n plugin ../etc/x\n models m\n}\n", "must match [a-z0-9_-]+"),
        ("channel a {\n plugin mock\n models m\n}\nchannel a {\n plugin mock\n models n\n}\n",
         ":5: channel a is already defined at line 1"),
        ("max_body_size lots\n", ":1: max_body_size"),
        ('channel "unterminated\n', ":1: unterminated quoted string"),
    ]
    for text, want in cases:
        path = conf_file(text)
        rc, out = lm("-t", "-c", path, "-p", PLUGIN_DIR)
        check(rc == 1 and path in out and want in out, "%r -> rc %d: %s" % (text, rc, out))


def test_missing_explicit_config():
    rc, out = lm("-t", "-c", "/nonexistent/longmen.conf")
    check(rc == 1 and "/nonexistent/longmen.conf: cannot open" in out, out)


def test_bad_plugins_refused_with_reason():
    cases = [("bad_abi", "built for ABI 2.0, host is 1."), ("no_entry", "no entry point"),
             ("fails_init", "init failed: fails_init always fails"),
             ("no_stream_cb", "lacks parse_event")]
    for name, want in cases:
        path = conf_file("channel a {\n plugin %s\n models m\n}\n" % name)
        rc, out = lm("-t", "-c", path, "-p", TEST_PLUGIN_DIR)
        check(rc == 1 and want in out and ":1: channel a" in out, "%s: %s" % (name, out))


def test_world_writable_plugin_refused():
    d = tempfile.mkdtemp(prefix="lm-ww-")
    shutil.copy(os.path.join(PLUGIN_DIR, "mock.so"), os.path.join(d, "mock.so"))
    os.chmod(os.path.join(d, "mock.so"), 0o666)
    os.chmod(d, 0o755)
    path = conf_file("channel a {\n plugin mock\n models m\n}\n")
    rc, out = lm("-t", "-c", path, "-p", d)
    check(rc == 1 and "world-writable" in out, out)


def test_bad_plugins_do_not_stop_the_others():
    d = tempfile.mkdtemp(prefix="lm-mix-")
    for n in ("bad_abi", "no_entry", "fails_init"):
        shutil.copy(os.path.join(TEST_PLUGIN_DIR, n + ".so"), d)
    shutil.copy(os.path.join(PLUGIN_DIR, "mock.so"), d)
    gw = Gateway(plugin_dir=d, channels="""
channel b1 {
    plugin bad_abi
    models broken-1
}
channel b2 {
    plugin no_entry
    models broken-2
}
channel b3 {
    plugin fails_init
    models broken-3
}
channel ok {
    plugin mock
    models mock-1
}
""")
    try:
        st, js, raw, _ = gw.chat({"model": "mock-1", "messages": [{"role": "user", "content": "x"}]})
        check(st == 200, raw)
        st, js, raw, _ = gw.chat({"model": "broken-1", "messages": [{"role": "user", "content": "x"}]})
        check(st == 404, raw)
        log = gw.logtext()
        for want in ("built for ABI 2.0", "no entry point", "fails_init always fails"):
            check(want in log and "channel disabled" in log, "log lacks %r: %s" % (want, log))
    finally:
        gw.stop()


def test_builtin_default_without_config():
    d = tempfile.mkdtemp(prefix="lm-nocfg-")
    p = subprocess.run([BIN, "-t", "-p", PLUGIN_DIR], capture_output=True, text=True, timeout=20, cwd=d)
    check(p.returncode == 0 and "built-in" in p.stdout + p.stderr, p.stdout + p.stderr)


def test_documented_script_blocks_check():
    """Every `script ... {` block shown in README.md and scripts/README.md
    passes longmen -t as written (args is JSON with spaces, a # comment may
    follow it), and args that is not one JSON value names the problem."""
    import re
    blocks = []
    for doc in ("README.md", os.path.join("scripts", "README.md")):
        with open(os.path.join(ROOT, doc)) as f:
            blocks += re.findall(r"^script [^\n]*\{\n(?:[^\n]*\n)*?\}$", f.read(), re.M)
    check(len(blocks) >= 2, "found the documented script blocks: %d" % len(blocks))
    for b in blocks:
        path = conf_file("listen 127.0.0.1:1\n%s\n" % b)
        rc, out = lm("-t", "-c", path, "-p", PLUGIN_DIR)
        check(rc == 0, "documented block fails longmen -t: %s\n%s" % (out, b))
    for args, want in (('{"mode": "mask"} junk', "text after the JSON value"),
                       ('{"mode": }', "args must be JSON")):
        path = conf_file("script s scripts/pii_mask.lua {\n    args %s\n}\n" % args)
        rc, out = lm("-t", "-c", path, "-p", PLUGIN_DIR)
        check(rc != 0 and want in out and ":2:" in out, "args %r: %s" % (args, out))


run([test_help, test_documented_script_blocks_check, test_check_shipped_config, test_config_errors_name_file_and_line,
     test_missing_explicit_config, test_bad_plugins_refused_with_reason,
     test_world_writable_plugin_refused, test_bad_plugins_do_not_stop_the_others,
     test_builtin_default_without_config])
