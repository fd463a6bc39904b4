"""The official OpenAI SDK (openai, pinned in
tests/integration/anthropic_sdk/package.json next to the Anthropic SDK)
against the real binary and a Qwen (DashScope native) channel mock:
responses.create, responses.stream (finalResponse text and usage), the raw
stream's events, function calls over two turns plain and streamed, and
typed errors (a stateful request, a bad key).

The SDKs are installed with `npm ci` from the lock file when node_modules
lacks them. Without node the test prints a SKIP line and passes; without
network for a first install it fails (never a silent pass).
"""
from inbound_lib import qw_sdk_chat, sdk_test_main
from lib import Mock

QW_CHAT = "/api/v1/services/aigc/text-generation/generation"
qwen = Mock()


def call_named(msgs):
    """The tool turn follows the assistant's call of get_weather."""
    return msgs[-2]["tool_calls"][0]["function"]["name"] == "get_weather"


qwen.routes[QW_CHAT] = lambda h, body: qw_sdk_chat(h, body, turn_ok=call_named)

if __name__ == "__main__":
    sdk_test_main("test_openai_sdk_responses", qwen, ["openai"], "openai_check.mjs",
                  ("create", "stream", "stream-events", "tools", "tools-stream", "errors"), "the OpenAI SDK test")
