"""Makes (phase "make") or checks (phase "check") files with the real Python
retalk 0.0.1, for retalk-store-sqlite's interop tests.

make WORK: runs retalk.server (0.0.1) on a loopback port over WORK/server.db
and three users (WORK/alice, WORK/bob, WORK/carol, each a CLI-style identity
folder with store.db) that publish keys and exchange a few messages, leaving
mail queued and state in alice's folder. Prints a JSON description.

check WORK: runs the Python relay again on the same server.db (now
written by the Rust store) and lets bob receive; prints what he got.

open-alice WORK: tries to open alice's (migrated) folder with Python retalk.
"""

import json
import os
import sqlite3
import sys
import threading

phase, work = sys.argv[1], sys.argv[2]
os.environ["SERVER_DB"] = os.path.join(work, "server.db")

from http.server import ThreadingHTTPServer  # noqa: E402

from retalk import server  # noqa: E402  (reads SERVER_DB on import)
from retalk.user import User  # noqa: E402

httpd = ThreadingHTTPServer(("127.0.0.1", 0), server._Handler)
url = f"http://127.0.0.1:{httpd.server_address[1]}"
server.AUDIENCE = url  # signatures are bound to the URL users call
threading.Thread(target=httpd.serve_forever, daemon=True).start()

SECRETS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}


def user(name):
    folder = os.path.join(work, name)
    os.makedirs(folder, exist_ok=True)
    u = User(url, SECRETS[name], name=name, store=os.path.join(folder, "store.db"))
    # what `retalk init --name NAME --server URL` saves
    u._meta_set("name", name)
    u._meta_set("server_url", url)
    return u


def rows(db, sql):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


if phase == "make":
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    alice.publish(n=5)
    bob.publish(n=5)
    carol.publish(n=3)
    a, b, c = alice.user_id(), bob.user_id(), carol.user_id()

    carol.send(a, "carol 1")
    first = alice.receive()          # processed + a session with carol; ack queued for carol
    carol.send(a, "carol 2")         # still a pre-key message: carol has heard nothing back
    alice.send(b, "hello bob")       # claims one of bob's keys; stays in alice's outbox
    bob_got = bob.receive()          # ack queued for alice
    bob.send(a, "bob 1")             # a normal message, queued for alice

    # `retalk add bob <id> --pin <key>` and `retalk add carol <id>`
    alice_db = os.path.join(work, "alice", "store.db")
    conn = sqlite3.connect(alice_db)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS peers(name TEXT PRIMARY KEY, id TEXT, pin TEXT)")
        conn.execute("INSERT INTO peers(name, id, pin) VALUES(?,?,?)", ("bob", b, bob.identity_key()))
        conn.execute("INSERT INTO peers(name, id, pin) VALUES(?,?,?)", ("carol", c, None))
    conn.close()

    def keys(u):
        acct = u._load_account()
        return {"identity_key": acct.curve25519_key.to_base64(),
                "signing_key": acct.ed25519_key.to_base64()}

    server_db = os.path.join(work, "server.db")
    print(json.dumps({
        "url": url,
        "ids": {"alice": a, "bob": b, "carol": c},
        "keys": {"alice": keys(alice), "bob": keys(bob), "carol": keys(carol)},
        "secrets": SECRETS,
        "alice_received": [list(t) for t in first],
        "bob_received": [list(t) for t in bob_got],
        "users": rows(server_db, "SELECT id, identity_key, signing_key, fallback_key_id, fallback_key FROM users"),
        "otks": rows(server_db, "SELECT id, owner, key_id, key, claimed FROM otks ORDER BY id"),
        "messages": rows(server_db, "SELECT id, ts, sender, recipient, mtype, body FROM messages ORDER BY id"),
        "alice_meta": dict(rows(alice_db, "SELECT k, v FROM meta")),
        "alice_sessions": rows(alice_db, "SELECT peer, blob FROM sessions"),
        "alice_outbox": rows(alice_db, "SELECT id, peer, mtype, body, ts FROM outbox"),
        "alice_processed": rows(alice_db, "SELECT hash, msg_id FROM processed"),
    }))
elif phase == "check":
    bob = user("bob")
    print(json.dumps({"bob_received": [list(t) for t in bob.receive()]}))
elif phase == "open-alice":
    # A migrated folder must be refused, not given a fresh identity.
    store = os.path.join(work, "alice", "store.db")
    try:
        User(url, SECRETS["alice"], name="alice", store=store)
        print(json.dumps({"opened": True}))
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"opened": False, "error": repr(e)}))
else:
    raise SystemExit(f"unknown phase {phase}")
httpd.shutdown()
