"""The host closes the connection while a `receive` waits: nothing is taken.

Run by retalk-cli/tests/mcp.rs: argv = retalk binary, work folder (alice/,
bob/, ids.json), passphrase. Alice's server waits in `receive`; the host
(the official MCP Python SDK) closes its side, and bob sends at that very
moment. The server must exit at once without taking bob's message, so the
next server's `receive` returns it. Prints `ok closing` when it passed.
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


def server(who):
    return StdioServerParameters(command=RETALK, args=["mcp"], env=env(who))


def bob_sends(text):
    time.sleep(0.3)
    subprocess.run([RETALK, "--dir", os.path.join(WORK, "bob"), "send", text, "--peer", IDS["alice"]],
                   env=dict(os.environ, **env("bob")), check=True, capture_output=True)


async def main():
    log = open(os.path.join(WORK, "alice.mcp.log"), "w")
    async with anyio.create_task_group() as outer:
        started = None
        async with stdio_client(server("alice"), errlog=log) as (r, w), ClientSession(r, w) as a:
            await a.initialize()
            assert not (await a.call_tool("add", {"fingerprint": IDS["bob"], "name": "bob"})).is_error

            async def waiting():
                try:
                    await a.call_tool("receive", {"wait": 20})
                except BaseException:
                    pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiting)
                await anyio.sleep(1.5)
                # No notifications/cancelled reaches the server: its input
                # is closed first, the way a host that goes away closes it.
                await w.aclose()
                outer.start_soon(anyio.to_thread.run_sync, bob_sends, "sent as the host left")
                started = time.monotonic()
                tg.cancel_scope.cancel()
        took = time.monotonic() - started
    async with stdio_client(server("alice"), errlog=sys.stderr) as (r, w), ClientSession(r, w) as a:
        await a.initialize()
        got = (await a.call_tool("receive", {"wait": 10})).structured_content["messages"]
        assert [m["text"] for m in got] == ["sent as the host left"], got
    # The server exits on its own (the SDK waits 2 s, then kills it).
    assert took < 1.8, f"the server took {took:.1f} s to exit after its stdin closed"
    log.close()
    said = open(os.path.join(WORK, "alice.mcp.log")).read()
    assert "the host closed the connection: a waiting receive stops" in said, said
    print(f"ok closing ({took:.1f} s to exit)")


anyio.run(main)
