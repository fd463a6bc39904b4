"""The official Anthropic SDK (@anthropic-ai/sdk, pinned in
tests/integration/anthropic_sdk/package.json) against the real binary and a
Qwen (DashScope native) channel mock: messages.create, messages.stream
(finalMessage text and usage), a tool-use round trip plain and streamed, a
Claude Code-style request (system blocks, tools, thinking enabled, a long
stream, the key as a bearer token) and a typed authentication error.

The SDK is installed with `npm ci` from the lock file when node_modules is
missing. Without node the test prints a SKIP line and passes; without
network for a first install it fails (never a silent pass).
"""
from inbound_lib import D, qw_ev, qw_sdk_chat, sdk_test_main
from lib import Mock, json_reply
from test_providers import chunked

QW_CHAT = "/api/v1/services/aigc/text-generation/generation"
qwen = Mock()


def long_answer(h, msgs):
    """The Claude Code-style request: a system of two blocks, a 200-event stream."""
    if "long" not in D(msgs):
        return False
    if msgs[0] != {"role": "system", "content": "You are Claude Code.\n\nBe helpful."}:
        json_reply(h, 400, {"code": "InvalidParameter", "message": "system: %s" % D(msgs[0])})
        return True
    parts = ["word "] * 199 + ["word"]
    chunked(h, "text/event-stream", [qw_ev(i + 1, {"content": t}, "stop" if i == 199 else "null", i + 1, "req-sdk")
                                     for i, t in enumerate(parts)])
    return True


qwen.routes[QW_CHAT] = lambda h, body: qw_sdk_chat(h, body, first=long_answer)

if __name__ == "__main__":
    sdk_test_main("test_anthropic_sdk", qwen, ["@anthropic-ai/sdk"], "sdk_check.mjs",
                  ("create", "stream", "tools", "tools-stream", "claude-code", "auth-error"), "the Anthropic SDK test")
