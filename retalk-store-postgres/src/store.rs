//! [`PgRelayStore`]: every `RelayStore` step as one statement or one short
//! transaction, correct with any number of relay processes on the database.

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use retalk_proto::ids::UserId;
use retalk_proto::relay::{
    ApiKeyRecord, ClaimOutcome, DeliveryRules, NewMessage, PublishOutcome, ReadLimit, RefusalRules,
    RelayStore, SendOutcome, StoreError, StoredMessage,
};
use retalk_proto::wire::{ClaimedKey, KeyCounts, PublicKeys};
use tokio_postgres::{NoTls, Row};

use crate::error::{describe, PgError};
use crate::listen::{Listener, CHANNEL};
use crate::schema;

/// Advisory-lock namespaces (the first key of the two-key form): one
/// user's key uploads, one recipient's capped mailbox.
const LOCK_PUBLISH: i32 = 0x7274_0001;
const LOCK_MAILBOX: i32 = 0x7274_0002;

/// Tunables of a [`PgRelayStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgOptions {
    /// Connections per pool; a node holds two pools (durable writes, and
    /// nonces and reads) plus its LISTEN connection: at most
    /// `2 * pool_size + 1` connections per node.
    pub pool_size: usize,
    /// How long a call waits for a connection (or for a new one to be made)
    /// before it fails (the relay answers 503).
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Parses a `postgres://` URL (or a libpq key=value string) and fills in
/// what the relay needs when unset: a connect timeout and TCP keepalives
/// (so a vanished server is noticed).
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, PgError> {
    let trimmed = url.trim();
    if trimmed.is_empty() {
        return Err(PgError::BadUrl("empty".into()));
    }
    let mut config =
        tokio_postgres::Config::from_str(trimmed).map_err(|e| PgError::BadUrl(describe(&e)))?;
    if config.get_hosts().is_empty() {
        return Err(PgError::BadUrl("no host given".into()));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(PgOptions::default().connect_timeout);
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(15))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    if config.get_application_name().is_none() {
        config.application_name("retalk-relay");
    }
    Ok(config)
}

/// The relay's state in a PostgreSQL database, shared by any number of
/// relay processes (see the crate docs for how each rule holds across
/// them).
///
/// The trait is synchronous (the relay calls it from blocking threads);
/// the store owns a small tokio runtime that drives its connections, and
/// each call runs its queries with `block_on` on the calling thread. So a
/// call must not be made from an async task (it would block that worker);
/// the relay never does, it calls stores from `spawn_blocking`.
pub struct PgRelayStore {
    /// Durable writes: every commit waits for its flush.
    durable: Pool,
    /// Nonces and reads, on sessions with `synchronous_commit = off` (see
    /// [`RelayStore::use_nonce`] below for why that is safe).
    fast: Pool,
    config: tokio_postgres::Config,
    /// Last `forget_before` this node pruned the nonce table at.
    pruned_to: Mutex<Option<f64>>,
    runtime: OwnRuntime,
}

impl std::fmt::Debug for PgRelayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRelayStore")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

/// The store's runtime, shut down in the background when dropped: the
/// store may be dropped on an async thread, where a blocking shutdown
/// would panic.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn handle(&self) -> Result<&tokio::runtime::Runtime, PgError> {
        self.0
            .as_ref()
            .ok_or_else(|| PgError::Pool("store closed".into()))
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn pool(config: tokio_postgres::Config, options: &PgOptions) -> Result<Pool, PgError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A connection the server closed (a restart) is noticed when it
            // is next taken and replaced, without a round trip per request.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.connect_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))
}

impl PgRelayStore {
    /// Connects, migrates the schema and returns the store. Blocks: call
    /// it from synchronous code (tests, benches); async code uses
    /// [`connect_async`](Self::connect_async).
    pub fn connect(url: &str) -> Result<Self, PgError> {
        Self::connect_with(url, PgOptions::default())
    }

    /// [`connect`](Self::connect) with chosen options.
    pub fn connect_with(url: &str, options: PgOptions) -> Result<Self, PgError> {
        let store = Self::new(url, &options)?;
        let runtime = store.runtime.handle()?;
        runtime.block_on(store.setup())?;
        Ok(store)
    }

    /// [`connect`](Self::connect) from async code (the relay's start).
    pub async fn connect_async(url: &str, options: PgOptions) -> Result<Self, PgError> {
        let store = Self::new(url, &options)?;
        let (durable, fast) = (store.durable.clone(), store.fast.clone());
        let setup = store
            .runtime
            .handle()?
            .spawn(async move { Self::setup_pools(&durable, &fast).await });
        setup
            .await
            .map_err(|e| PgError::Pool(format!("setup failed: {e}")))??;
        Ok(store)
    }

    fn new(url: &str, options: &PgOptions) -> Result<Self, PgError> {
        let mut config = parse_url(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        let mut fast_config = config.clone();
        let extra = fast_config.get_options().unwrap_or_default().to_owned();
        fast_config.options(format!("{extra} -c synchronous_commit=off").trim());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("retalk-postgres")
            .enable_all()
            .build()
            .map_err(PgError::Runtime)?;
        let runtime = OwnRuntime(Some(runtime));
        // Pools spawn connection tasks: build them inside the runtime.
        let _entered = runtime.handle()?.enter();
        Ok(Self {
            durable: pool(config.clone(), options)?,
            fast: pool(fast_config, options)?,
            config,
            pruned_to: Mutex::new(None),
            runtime,
        })
    }

    async fn setup(&self) -> Result<(), PgError> {
        Self::setup_pools(&self.durable, &self.fast).await
    }

    async fn setup_pools(durable: &Pool, fast: &Pool) -> Result<(), PgError> {
        let unreachable = |e: deadpool_postgres::PoolError| match PgError::from(e) {
            PgError::Pool(text) => PgError::Unreachable(text),
            other => other,
        };
        let mut conn = durable.get().await.map_err(unreachable)?;
        schema::migrate(&mut conn).await?;
        // The second pool's settings are checked now too, not on the first
        // request.
        let probe = fast.get().await.map_err(unreachable)?;
        probe.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// A source of wake-ups for mail stored by any node: see [`Listener`].
    pub fn listener(&self) -> Listener {
        Listener::new(self.config.clone())
    }

    /// Runs `f` to completion on the calling thread.
    fn run<T>(&self, f: impl Future<Output = Result<T, PgError>>) -> Result<T, StoreError> {
        let runtime = self.runtime.handle()?;
        runtime.block_on(f).map_err(StoreError::from)
    }

    async fn durable(&self) -> Result<Object, PgError> {
        Ok(self.durable.get().await?)
    }

    async fn fast(&self) -> Result<Object, PgError> {
        Ok(self.fast.get().await?)
    }

    /// Once a second per node at most: the bound below which nonce rows go.
    fn nonce_prune(&self, forget_before: f64) -> Option<f64> {
        let mut pruned = self.pruned_to.lock().unwrap_or_else(|e| e.into_inner());
        if pruned.is_some_and(|t| forget_before - t < 1.0) {
            return None;
        }
        *pruned = Some(forget_before);
        Some(forget_before)
    }
}

fn text(row: &Row, i: usize) -> Result<Option<String>, PgError> {
    // Operators may have hand-edited rows; read NULL and '' alike as unset.
    Ok(row
        .try_get::<_, Option<String>>(i)?
        .filter(|s| !s.is_empty()))
}

fn stored(row: &Row) -> Result<StoredMessage, PgError> {
    Ok(StoredMessage {
        message_id: row.try_get(0)?,
        ts: row.try_get::<_, Option<f64>>(1)?.unwrap_or_default(),
        sender: row.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
        mtype: row.try_get::<_, Option<i64>>(3)?.unwrap_or_default(),
        body: row.try_get::<_, Option<String>>(4)?.unwrap_or_default(),
    })
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn limit_rows(limit: ReadLimit) -> i64 {
    i64::try_from(limit.max_messages.max(1)).unwrap_or(i64::MAX)
}

/// Stores a message and notifies the recipient's listeners in one
/// statement (the notification is sent when it commits), after checking
/// the recipient is known and has not refused this body. Columns: known,
/// refusal (`[sig]` or NULL), new id (or NULL).
const INSERT_MESSAGE: &str = "
WITH chk AS (
    SELECT EXISTS (SELECT 1 FROM users WHERE id = $3) AS known,
           (SELECT ARRAY[COALESCE(sig, '')] FROM refused
             WHERE recipient = $3 AND hash = $6 AND ts > $7) AS refusal
), ins AS (
    INSERT INTO messages(ts, sender, recipient, mtype, body)
    SELECT $1, $2, $3, $4, $5 FROM chk WHERE chk.known AND chk.refusal IS NULL
    RETURNING id
), woke AS (
    SELECT pg_notify('retalk_mail', $3) FROM ins
)
SELECT chk.known, chk.refusal, (SELECT id FROM ins), (SELECT count(*) FROM woke) FROM chk";

/// Takes the oldest messages no other reader holds, within the count and
/// byte bounds (the first always), and deletes them, in one statement.
/// `SKIP LOCKED`: two reads of one mailbox at once (through two nodes)
/// each get different messages, never the same one. `$4`: one sender's
/// mail only, or NULL for everyone's.
const TAKE_MESSAGES: &str = "
WITH c AS (
    SELECT id FROM messages
    WHERE recipient = $1 AND ($4::text IS NULL OR sender = $4)
    ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
), w AS (
    SELECT m.id, row_number() OVER (ORDER BY m.id) AS n,
           sum(octet_length(COALESCE(m.body, ''))) OVER (ORDER BY m.id) AS upto
    FROM messages m JOIN c ON m.id = c.id
), d AS (
    DELETE FROM messages m USING w
    WHERE m.id = w.id AND (w.n = 1 OR w.upto <= $3)
    RETURNING m.id, m.ts, m.sender, m.mtype, m.body
)
SELECT id, ts, sender, mtype, body FROM d ORDER BY id";

/// Hands out the oldest unclaimed one-time key nobody else is taking, in
/// one statement, only for a user with published keys: the key's row stays,
/// flagged `claimed = 1`. Columns: identity_key, signing_key,
/// fallback_key_id, fallback_key, key_id (NULL: no one-time key), key.
const CLAIM_KEY: &str = "
WITH u AS (
    SELECT identity_key, signing_key, fallback_key_id, fallback_key FROM users
    WHERE id = $1 AND COALESCE(identity_key, '') <> '' AND COALESCE(signing_key, '') <> ''
), k AS (
    UPDATE otks SET claimed = 1
    WHERE id = (
        SELECT o.id FROM otks o
        WHERE o.owner = $1 AND o.claimed = 0 AND EXISTS (SELECT 1 FROM u)
        ORDER BY o.id LIMIT 1 FOR UPDATE SKIP LOCKED
    )
    RETURNING key_id, key
)
SELECT u.identity_key, u.signing_key, u.fallback_key_id, u.fallback_key, k.key_id, k.key
FROM u LEFT JOIN k ON true";

impl RelayStore for PgRelayStore {
    /// One `INSERT … ON CONFLICT` decides, in the database, for every node
    /// at once: a nonce is new if no row holds it, or its row is older
    /// than `forget_before` (then it is refreshed); exactly one of any
    /// number of concurrent uses, on any node, affects a row.
    ///
    /// Committed without waiting for the flush (`synchronous_commit =
    /// off`): the row is visible to every node at once, and the write of
    /// the request that used it (a message, a claim, a read) is a later,
    /// flushed commit, which flushes this one with it. A crash of the
    /// database can lose only nonces of requests that changed nothing (a
    /// replay of those is harmless) or whose changes were lost with them.
    /// The same reasoning as the SQLite store's written-behind nonces,
    /// without its one-process limit.
    fn use_nonce(&self, nonce: &str, now: f64, forget_before: f64) -> Result<bool, StoreError> {
        let prune = self.nonce_prune(forget_before);
        self.run(async {
            let conn = self.fast().await?;
            if let Some(before) = prune {
                let stmt = conn
                    .prepare_cached("DELETE FROM nonces WHERE ts < $1")
                    .await?;
                conn.execute(&stmt, &[&before]).await?;
            }
            let stmt = conn
                .prepare_cached(
                    "INSERT INTO nonces(nonce, ts) VALUES($1, $2) \
                     ON CONFLICT (nonce) DO UPDATE SET ts = excluded.ts \
                     WHERE nonces.ts < $3",
                )
                .await?;
            let n = conn.execute(&stmt, &[&nonce, &now, &forget_before]).await?;
            Ok(n == 1)
        })
    }

    /// In one transaction, serialised per user by an advisory lock (two
    /// nodes taking one user's uploads at once see each other's keys for
    /// the cap and the id rule); claims run alongside it, since a claim
    /// only ever lowers the count the cap is checked against.
    fn publish_keys(
        &self,
        user: &UserId,
        keys: &PublicKeys,
        one_time_keys: &[(String, String)],
        fallback_key: Option<&(String, String)>,
        max_unclaimed: u64,
    ) -> Result<PublishOutcome, StoreError> {
        self.run(async {
            let owner = user.as_str();
            let mut conn = self.durable().await?;
            let tx = conn.transaction().await?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&LOCK_PUBLISH, &owner],
            )
            .await?;
            let unclaimed: i64 = tx
                .query_one(
                    "SELECT count(*) FROM otks WHERE owner = $1 AND claimed = 0",
                    &[&owner],
                )
                .await?
                .try_get(0)?;
            let ids: Vec<&str> = one_time_keys.iter().map(|(id, _)| id.as_str()).collect();
            let mut known: HashMap<String, bool> = HashMap::new();
            for row in tx
                .query(
                    "SELECT key_id, claimed <> 0 FROM otks WHERE owner = $1 AND key_id = ANY($2)",
                    &[&owner, &ids],
                )
                .await?
            {
                known.insert(row.try_get(0)?, row.try_get(1)?);
            }
            // The rule of `RelayStore::publish_keys`: a claimed id is
            // skipped, an id held unclaimed takes the new material, any
            // other is added once (a repeat takes the last material).
            let mut fresh: Vec<(&str, &str)> = Vec::new();
            let mut fresh_at: HashMap<&str, usize> = HashMap::new();
            let mut renewed: HashMap<&str, &str> = HashMap::new();
            for (id, key) in one_time_keys {
                match known.get(id.as_str()) {
                    Some(true) => {}
                    Some(false) => {
                        renewed.insert(id, key);
                    }
                    None => match fresh_at.get(id.as_str()) {
                        Some(&at) => fresh[at] = (id, key),
                        None => {
                            fresh_at.insert(id, fresh.len());
                            fresh.push((id, key));
                        }
                    },
                }
            }
            if count(unclaimed) + fresh.len() as u64 > max_unclaimed {
                // Dropping the transaction rolls it back.
                return Ok(PublishOutcome::TooManyKeys {
                    unclaimed: count(unclaimed),
                });
            }
            tx.execute(
                "INSERT INTO users(id, identity_key, signing_key) VALUES($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET identity_key = excluded.identity_key, \
                 signing_key = excluded.signing_key",
                &[&owner, &keys.identity_key, &keys.signing_key],
            )
            .await?;
            if let Some((key_id, key)) = fallback_key {
                tx.execute(
                    "UPDATE users SET fallback_key_id = $1, fallback_key = $2 WHERE id = $3",
                    &[key_id, key, &owner],
                )
                .await?;
            }
            if !renewed.is_empty() {
                let (ids, keys): (Vec<&str>, Vec<&str>) = renewed.into_iter().unzip();
                tx.execute(
                    "UPDATE otks SET key = u.key FROM unnest($2::text[], $3::text[]) AS u(key_id, key) \
                     WHERE otks.owner = $1 AND otks.key_id = u.key_id AND otks.claimed = 0",
                    &[&owner, &ids, &keys],
                )
                .await?;
            }
            if !fresh.is_empty() {
                let (ids, keys): (Vec<&str>, Vec<&str>) = fresh.iter().copied().unzip();
                // In upload order: ids (the claim order) follow it.
                tx.execute(
                    "INSERT INTO otks(owner, key_id, key, claimed) \
                     SELECT $1, u.key_id, u.key, 0 \
                     FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(key_id, key, n) \
                     ORDER BY u.n",
                    &[&owner, &ids, &keys],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(PublishOutcome::Published {
                added: fresh.len() as u64,
            })
        })
    }

    fn count_keys(&self, user: &UserId) -> Result<KeyCounts, StoreError> {
        self.run(async {
            let conn = self.fast().await?;
            let stmt = conn
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM otks WHERE owner = $1 AND claimed = 0), \
                            (SELECT fallback_key FROM users WHERE id = $1)",
                )
                .await?;
            let row = conn.query_one(&stmt, &[&user.as_str()]).await?;
            let unclaimed: i64 = row.try_get(0)?;
            Ok(KeyCounts {
                unclaimed: count(unclaimed),
                has_fallback: text(&row, 1)?.is_some(),
            })
        })
    }

    fn get_keys(&self, user: &UserId) -> Result<Option<PublicKeys>, StoreError> {
        self.run(async {
            let conn = self.fast().await?;
            let stmt = conn
                .prepare_cached("SELECT identity_key, signing_key FROM users WHERE id = $1")
                .await?;
            let Some(row) = conn.query_opt(&stmt, &[&user.as_str()]).await? else {
                return Ok(None);
            };
            Ok(match (text(&row, 0)?, text(&row, 1)?) {
                (Some(identity_key), Some(signing_key)) => Some(PublicKeys {
                    identity_key,
                    signing_key,
                }),
                _ => None,
            })
        })
    }

    fn claim_key(&self, user: &UserId) -> Result<ClaimOutcome, StoreError> {
        self.run(async {
            let conn = self.durable().await?;
            let stmt = conn.prepare_cached(CLAIM_KEY).await?;
            let Some(row) = conn.query_opt(&stmt, &[&user.as_str()]).await? else {
                return Ok(ClaimOutcome::UnknownPeer);
            };
            let (Some(identity_key), Some(signing_key)) = (text(&row, 0)?, text(&row, 1)?) else {
                return Ok(ClaimOutcome::UnknownPeer);
            };
            if let Some(key_id) = row.try_get::<_, Option<String>>(4)? {
                return Ok(ClaimOutcome::Claimed(ClaimedKey {
                    identity_key,
                    signing_key,
                    key_id,
                    one_time_key: row.try_get::<_, Option<String>>(5)?.unwrap_or_default(),
                    fallback: false,
                }));
            }
            Ok(match text(&row, 3)? {
                Some(one_time_key) => ClaimOutcome::Claimed(ClaimedKey {
                    identity_key,
                    signing_key,
                    key_id: row.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
                    one_time_key,
                    fallback: true,
                }),
                None => ClaimOutcome::Exhausted,
            })
        })
    }

    /// Without a mailbox cap: one statement (check, insert, notify). With
    /// one: a transaction serialised per recipient by an advisory lock, so
    /// the count the cap is checked against cannot change under it from
    /// another node's send (reads only lower it).
    fn send_message(
        &self,
        m: &NewMessage,
        rules: &DeliveryRules,
    ) -> Result<SendOutcome, StoreError> {
        self.run(async {
            let (to, sender) = (m.recipient.as_str(), m.sender.as_str());
            let mut conn = self.durable().await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                &m.ts,
                &sender,
                &to,
                &m.mtype,
                &m.body,
                &m.body_hash,
                &rules.refusals_expire_before,
            ];
            let decide = |row: &Row| -> Result<Option<SendOutcome>, PgError> {
                if !row.try_get::<_, bool>(0)? {
                    return Ok(Some(SendOutcome::UnknownRecipient));
                }
                if let Some(sig) = row.try_get::<_, Option<Vec<String>>>(1)? {
                    let sig = sig.into_iter().next().unwrap_or_default();
                    return Ok(Some(SendOutcome::Refused { sig }));
                }
                Ok(row
                    .try_get::<_, Option<i64>>(2)?
                    .map(|message_id| SendOutcome::Stored { message_id }))
            };
            if rules.max_mailbox == 0 {
                let stmt = conn.prepare_cached(INSERT_MESSAGE).await?;
                let row = conn.query_one(&stmt, &params).await?;
                return decide(&row)?
                    .ok_or_else(|| PgError::Db("message neither stored nor refused".into()));
            }
            let tx = conn.transaction().await?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&LOCK_MAILBOX, &to],
            )
            .await?;
            let row = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1), \
                     (SELECT ARRAY[COALESCE(sig, '')] FROM refused \
                       WHERE recipient = $1 AND hash = $3 AND ts > $4), \
                     (SELECT count(*) FROM messages WHERE recipient = $1), \
                     (SELECT count(*) FROM messages WHERE recipient = $1 AND sender = $2)",
                    &[&to, &sender, &m.body_hash, &rules.refusals_expire_before],
                )
                .await?;
            if !row.try_get::<_, bool>(0)? {
                return Ok(SendOutcome::UnknownRecipient);
            }
            if let Some(sig) = row.try_get::<_, Option<Vec<String>>>(1)? {
                let sig = sig.into_iter().next().unwrap_or_default();
                return Ok(SendOutcome::Refused { sig });
            }
            let (total, from_sender): (i64, i64) = (row.try_get(2)?, row.try_get(3)?);
            if let Some(refusal) = rules.over_cap(count(total), count(from_sender)) {
                return Ok(refusal);
            }
            let stmt = tx.prepare_cached(INSERT_MESSAGE).await?;
            let row = tx.query_one(&stmt, &params).await?;
            let outcome = decide(&row)?
                .ok_or_else(|| PgError::Db("message neither stored nor refused".into()))?;
            tx.commit().await?;
            Ok(outcome)
        })
    }

    fn read_messages(
        &self,
        user: &UserId,
        from: Option<&str>,
        peek: bool,
        limit: ReadLimit,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let max = limit_rows(limit);
        let max_bytes = i64::try_from(limit.max_bytes).unwrap_or(i64::MAX);
        let me = user.as_str();
        self.run(async {
            if peek {
                let conn = self.fast().await?;
                let stmt = conn
                    .prepare_cached(
                        "SELECT id, ts, sender, mtype, body FROM messages \
                         WHERE recipient = $1 AND ($3::text IS NULL OR sender = $3) \
                         ORDER BY id LIMIT $2",
                    )
                    .await?;
                let rows = conn.query(&stmt, &[&me, &max, &from]).await?;
                let mut out = Vec::new();
                let mut bytes = 0usize;
                for row in &rows {
                    let m = stored(row)?;
                    if !limit.admits(out.len(), bytes, m.body.len()) {
                        break;
                    }
                    bytes += m.body.len();
                    out.push(m);
                }
                return Ok(out);
            }
            let conn = self.durable().await?;
            let stmt = conn.prepare_cached(TAKE_MESSAGES).await?;
            let rows = conn.query(&stmt, &[&me, &max, &max_bytes, &from]).await?;
            rows.iter().map(stored).collect()
        })
    }

    fn nack(
        &self,
        recipient: &UserId,
        hash: &str,
        sig: &str,
        now: f64,
        rules: &RefusalRules,
    ) -> Result<(), StoreError> {
        self.run(async {
            let me = recipient.as_str();
            let mut conn = self.durable().await?;
            let tx = conn.transaction().await?;
            if let Some(before) = rules.expire_before {
                tx.execute("DELETE FROM refused WHERE ts < $1", &[&before])
                    .await?;
            }
            // Re-nacking refreshes the time and signature, keeping its age
            // rank (its id) for eviction, as the Python relay does.
            tx.execute(
                "INSERT INTO refused(recipient, hash, sig, ts) VALUES($1, $2, $3, $4) \
                 ON CONFLICT (recipient, hash) DO UPDATE SET sig = excluded.sig, ts = excluded.ts",
                &[&me, &hash, &sig, &now],
            )
            .await?;
            if rules.max_per_recipient > 0 {
                let keep = i64::try_from(rules.max_per_recipient).unwrap_or(i64::MAX);
                tx.execute(
                    "DELETE FROM refused WHERE id IN (SELECT id FROM refused \
                     WHERE recipient = $1 ORDER BY id DESC OFFSET $2)",
                    &[&me, &keep],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn api_key_valid(&self, key_hash: &str) -> Result<bool, StoreError> {
        self.run(async {
            let conn = self.fast().await?;
            let stmt = conn
                .prepare_cached("SELECT 1 FROM api_keys WHERE key_hash = $1 AND disabled = 0")
                .await?;
            Ok(conn.query_opt(&stmt, &[&key_hash]).await?.is_some())
        })
    }

    fn api_key_create(&self, key_hash: &str, label: &str, now: f64) -> Result<(), StoreError> {
        self.run(async {
            let conn = self.durable().await?;
            conn.execute(
                "INSERT INTO api_keys(key_hash, label, created, disabled) VALUES($1, $2, $3, 0) \
                 ON CONFLICT (key_hash) DO UPDATE SET label = excluded.label, \
                 created = excluded.created, disabled = 0",
                &[&key_hash, &label, &now],
            )
            .await?;
            Ok(())
        })
    }

    fn api_key_list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.run(async {
            let conn = self.fast().await?;
            let rows = conn
                .query(
                    "SELECT key_hash, label, created, disabled FROM api_keys \
                     ORDER BY created, key_hash",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(ApiKeyRecord {
                        key_hash: r.try_get(0)?,
                        label: r.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
                        created: r.try_get::<_, Option<f64>>(2)?.unwrap_or_default(),
                        disabled: r.try_get::<_, Option<i32>>(3)?.unwrap_or_default() != 0,
                    })
                })
                .collect()
        })
    }

    fn api_key_set_disabled(&self, key_hash: &str, disabled: bool) -> Result<u64, StoreError> {
        self.run(async {
            let conn = self.durable().await?;
            let flag = i32::from(disabled);
            Ok(conn
                .execute(
                    "UPDATE api_keys SET disabled = $1 WHERE key_hash = $2",
                    &[&flag, &key_hash],
                )
                .await?)
        })
    }

    fn api_key_delete(&self, key_hash: &str) -> Result<u64, StoreError> {
        self.run(async {
            let conn = self.durable().await?;
            Ok(conn
                .execute("DELETE FROM api_keys WHERE key_hash = $1", &[&key_hash])
                .await?)
        })
    }
}

/// The notification channel, for tests that listen themselves.
pub const NOTIFY_CHANNEL: &str = CHANNEL;
