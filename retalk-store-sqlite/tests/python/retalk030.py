"""Makes a server.db with the real Python retalk 0.3.0 relay code, for
retalk-store-sqlite's interop tests: users with one-time and fallback keys
(one claimed), queued mail, a signed refusal (nack) and API keys.

The tool functions are called in-process. Only the request-signature check
(`_caller`) is bypassed, by taking the caller from `auth`: everything that
writes the database is 0.3.0's own code. Prints a JSON description.
"""

import hashlib
import json
import os
import sqlite3
import sys

work = sys.argv[1]
db = os.path.join(work, "server.db")
os.environ["RETALK_SERVER_DB"] = db

import vodozemac as v  # noqa: E402

from retalk import server  # noqa: E402  (creates the schema on import)

server._caller = lambda tool, args, auth: auth["fingerprint"]


def identity(n_otks):
    acct = v.Account()
    ik, sk = acct.curve25519_key.to_base64(), acct.ed25519_key.to_base64()
    fp = server._fingerprint(ik, sk)
    acct.generate_one_time_keys(n_otks)
    acct.generate_fallback_key()
    otks = {kid: key.to_base64() for kid, key in acct.one_time_keys.items()}
    fk = {kid: key.to_base64() for kid, key in acct.fallback_key.items()}
    auth = {"fingerprint": fp, "identity_key": ik, "signing_key": sk}
    server.publish_keys(ik, sk, otks, fk, auth=auth)
    return {"acct": acct, "ik": ik, "sk": sk, "fp": fp, "auth": auth}


alice, bob = identity(3), identity(2)
claimed = json.loads(server.claim_key(alice["fp"], auth=bob["auth"]))
sent = [json.loads(server.send_message(alice["fp"], 1, "hello alice", auth=bob["auth"])),
        json.loads(server.send_message(alice["fp"], 0, "second", auth=bob["auth"]))]
refused_body = "a body alice refused"
h = hashlib.sha256(refused_body.encode()).hexdigest()
sig = alice["acct"].sign(f"nack|{alice['fp']}|{h}".encode()).to_base64()
server.nack(h, sig, auth=alice["auth"])
gate = json.loads(server.send_message(alice["fp"], 1, refused_body, auth=bob["auth"]))
live = server._api_key_create("ops")
old = server._api_key_create("old")
server._api_key_set_disabled(old["key_hash"], True)

conn = sqlite3.connect(db)
print(json.dumps({
    "alice": {"id": alice["fp"], "identity_key": alice["ik"], "signing_key": alice["sk"]},
    "bob": {"id": bob["fp"], "identity_key": bob["ik"], "signing_key": bob["sk"]},
    "claimed": claimed,
    "sent": sent,
    "refused": {"body": refused_body, "hash": h, "sig": sig, "gate": gate},
    "api_keys": {"live": live, "old": old},
    "otks": conn.execute("SELECT id, owner, key_id, key, claimed FROM otks ORDER BY id").fetchall(),
    "messages": conn.execute("SELECT id, ts, sender, recipient, mtype, body FROM messages ORDER BY id").fetchall(),
    "api_key_rows": conn.execute("SELECT key_hash, label, created, disabled FROM api_keys ORDER BY created").fetchall(),
}))
conn.close()
