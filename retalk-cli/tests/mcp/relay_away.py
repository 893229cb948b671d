"""check_inbox and receive count and read the mail already here, with the
relay up or gone.

Run by retalk-cli/tests/mcp.rs: argv = retalk binary, work folder (alice/,
bob/, ids.json), passphrase. Bob writes to alice before her server starts;
her first `check_inbox` counts all his messages (her server's upkeep task
fetches them at the same moment). Then the script prints `STOP RELAY` and
waits for a line on stdin (the test stops the relay): `check_inbox` and
`receive` still answer from what is here, a `wait` waits, and the relay's
absence is a note beside the results, or the error when nothing is here.
Prints `ok <step>` per step.
"""

import json
import os
import subprocess
import sys
import time

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

RETALK, WORK, PASSPHRASE = sys.argv[1:4]
IDS = json.load(open(os.path.join(WORK, "ids.json")))


def env(who):
    return dict(RETALK_DIR=os.path.join(WORK, who), RETALK_PASSPHRASE=PASSPHRASE,
                RETALK_HOME=os.path.join(WORK, "home"))


def cli(who, *args):
    subprocess.run([RETALK, "--dir", os.path.join(WORK, who), *args],
                   env=dict(os.environ, **env(who)), check=True, capture_output=True)


def data(result):
    assert not result.is_error, result
    return result.structured_content


async def main():
    cli("alice", "add", IDS["bob"], "--peer", "bob")
    texts = ["one", "two", "three", "four", "five", "six", "seven", "eight"]
    for text in texts:
        cli("bob", "send", text, "--peer", IDS["alice"])
    log = open(os.path.join(WORK, "alice.mcp.log"), "w")
    params = StdioServerParameters(command=RETALK, args=["mcp"], env=env("alice"))
    async with stdio_client(params, errlog=log) as (r, w), ClientSession(r, w) as a:
        await a.initialize()
        inbox = data(await a.call_tool("check_inbox", {}))
        assert inbox["total"] == len(texts) and inbox["from"][0]["count"] == len(texts), inbox
        print("ok counted at start", flush=True)

        print("STOP RELAY", flush=True)
        assert sys.stdin.readline().strip() == "stopped"
        inbox = await a.call_tool("check_inbox", {})
        assert data(inbox)["total"] == len(texts) and "relay_error" in data(inbox), inbox
        assert "could not be reached" in inbox.content[0].text, inbox
        got = data(await a.call_tool("receive", {"limit": 1}))
        assert [m["text"] for m in got["messages"]] == ["one"] and got["relay_error"], got
        got = data(await a.call_tool("receive", {"wait": 5}))
        assert [m["text"] for m in got["messages"]] == texts[1:], got
        print("ok read with the relay away", flush=True)

        started = time.monotonic()
        result = await a.call_tool("receive", {"wait": 2})
        took = time.monotonic() - started
        assert result.is_error and "could not be reached" in result.content[0].text, result
        assert took >= 1.9, f"the wait did not wait: {took:.1f} s"
        print("ok nothing here: waited, then the relay's error", flush=True)


anyio.run(main)
