"""The admin web console in a real browser (docs/console.md): Debian's
headless chromium driven by puppeteer-core (pinned in console/package.json,
installed with `npm ci` when node_modules is missing). The flow, once in
English and once with Accept-Language zh-CN asserting the Chinese labels:
sign in (a wrong token refused, cookie flags), create a key and see its
secret once, a key named like an XSS attempt shown as text, a channel
created through the form (a bad setting shows the parser's message next to
the field), traffic through the data plane seen in the overview chart and
the usage table, CSV export, the channel disabled and requests failing over
to the file's channel, a POST without the CSRF token refused, the check
button, sign-out, the read-only console, the language switch.
Screenshots go to build/console-shots/. Without node/npm or chromium the
test prints a SKIP line and passes."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

from lib import ROOT, Gateway, Mock, check, free_port, json_reply

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console")
TOKEN = "console-admin-token-0123456789abcdef"
READ = "console-read-token-0123456789abcdef"
UP_KEY = "up-key-from-env-0123456789"
SHOTS = os.path.join(ROOT, os.environ.get("O", "build"), "console-shots")


def upstream(tag):
    m = Mock()

    def chat(h, body):
        req = json.loads(body)
        json_reply(h, 200, {
            "id": "chatcmpl-%s" % tag, "object": "chat.completion", "created": 1700000000, "model": req["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "%s:%s" % (tag, req["model"])},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    m.routes["/v1/chat/completions"] = chat
    return m


def chromium():
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    return None


def npm_ready():
    if os.path.isdir(os.path.join(HERE, "node_modules", "puppeteer-core")):
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PUPPETEER_SKIP_DOWNLOAD="1"))
    check(r.returncode == 0, "npm ci failed (network?): %s" % (r.stdout + r.stderr)[-2000:])


def run_flow(lang):
    a, b = upstream("A"), upstream("B")
    aport = free_port()
    data = tempfile.mkdtemp(prefix="lm-console-")
    filech = "channel filech {\n plugin openai\n base_url %s/v1\n api_key up\n models m1\n priority 5\n}\n" % b.url
    extra = ("data_dir %s\nadmin_listen 127.0.0.1:%d\nadmin_private_upstreams on\nadmin_env_allow LM_TEST_*\n"
             % (data, aport))
    gw = Gateway(channels=filech, extra=extra,
                 env={"LONGMEN_ADMIN_TOKEN": TOKEN, "LONGMEN_ADMIN_READONLY_TOKEN": READ, "LM_TEST_UP_KEY": UP_KEY})
    try:
        deadline = time.time() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", aport), timeout=0.2).close()
                break
            except OSError:
                check(time.time() < deadline, "admin listener did not start")
                time.sleep(0.05)
        conf = os.path.join(gw.dir, "drive-%s.json" % lang)
        with open(conf, "w") as f:
            json.dump({"lang": lang, "admin": "http://127.0.0.1:%d" % aport, "gw": "http://127.0.0.1:%d" % gw.port,
                       "token": TOKEN, "readToken": READ, "upA": a.url, "conf": gw.conf, "chromium": chromium(), "shots": SHOTS}, f)
        r = subprocess.run(["node", "drive.mjs", conf], cwd=HERE, capture_output=True, text=True, timeout=240)
        out = r.stdout.strip()
        if out:
            print(out, flush=True)
        check(r.returncode == 0, "the %s flow failed:\n%s\n%s" % (lang, out[-1500:], r.stderr[-1500:]))
        log = gw.logtext()
        for secret in (TOKEN, READ, UP_KEY):
            check(secret not in log, "a secret reached the log")
    finally:
        gw.stop()
        a.close()
        b.close()


def i18n_keys_match():
    """Every label has both an English and a Chinese entry."""
    src = open(os.path.join(ROOT, "console", "i18n.js"), encoding="utf-8").read()
    r = subprocess.run(["node", "-e", "globalThis.window={};eval(require('fs').readFileSync(0,'utf8'));"
                        "const e=Object.keys(window.LM_I18N.en).sort(),z=Object.keys(window.LM_I18N.zh).sort();"
                        "console.log(JSON.stringify([e.filter(k=>!z.includes(k)),z.filter(k=>!e.includes(k))]))"],
                       input=src, capture_output=True, text=True, timeout=30)
    missing = json.loads(r.stdout)
    check(missing == [[], []], "i18n tables differ: %r" % missing)


def main():
    if shutil.which("node") is None or shutil.which("npm") is None or chromium() is None:
        print("SKIP test_console: node/npm or chromium not installed (apt-get install chromium nodejs npm)")
        return 0
    fails = 0
    shutil.rmtree(SHOTS, ignore_errors=True)  # only this run's pictures
    for name, fn in (("test_console_i18n_tables", i18n_keys_match), ("test_console_npm", npm_ready),
                     ("test_console_en", lambda: run_flow("en")), ("test_console_zh", lambda: run_flow("zh"))):
        try:
            fn()
            print("PASS", name, flush=True)
        except Exception as e:  # noqa: BLE001 - one line per case
            print("FAIL %s: %s" % (name, e), flush=True)
            fails += 1
            if name == "test_console_npm":
                break
    print("screenshots in %s" % SHOTS)
    return 1 if fails else 0


if __name__ == "__main__":
    raise SystemExit(main())
