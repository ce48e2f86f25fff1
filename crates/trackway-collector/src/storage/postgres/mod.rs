//! The shared store: one PostgreSQL database behind any number of collectors.
//!
//! ```text
//!  collector A ─┐ ingest ─▶ writer task ─▶ BEGIN; dedup upserts; counts(A) += …;
//!               │                           lock(SEQUENCE); INSERT events; COMMIT (synchronous)
//!  collector B ─┤ ingest ─▶ writer task ─▶ (the same, its own counts rows)
//!  collector C ─┘ admin, delivery ─▶ pool ─▶ reads (MVCC: never block the writers)
//! ```
//!
//! Each collector runs one writer task that commits groups of requests, as the SQLite writer
//! does: the first waiting request and every one queued behind it, one transaction, one WAL
//! flush. `synchronous_commit` is forced on for the store's connections, so a 200 follows a
//! flushed commit whatever the database's default.
//!
//! Invariants, each enforced by the database rather than by one process:
//! - **Dedupe** (`writer`): the `dedup` table holds, per source, messageId and status (the
//!   accepted copies and the rejected ones apart, as the SQLite store keeps them apart), the
//!   arrival of the copy last stored. An upsert stores an event only when there is no row or
//!   the row is older than the window; its unique key makes two collectors inserting the same
//!   id wait on each other, so exactly one stores it. A plain unique key on the events would
//!   block a repeat forever; this one moves with the window, and rows older than the window
//!   are deleted in the background.
//! - **Seq is commit order** (guarantee 4, DESIGN.md): a writer allocates its seqs only under a
//!   transaction advisory lock held until its commit is visible, so every smaller seq is
//!   committed (or rolled back) before a larger one can be seen. A cursor reading
//!   `seq > last` therefore never skips. The lock covers the insert and the flush only; the
//!   dedup upserts and the counts, most of a group's work, run before it, in parallel.
//! - **NUL never fails a commit**: PostgreSQL's `text` refuses U+0000. The dedup key (a
//!   rejected message's key starts with one) is stored as `bytea`, exact. The body is JSON
//!   text, where a NUL is always escaped (`\u0000`); one that is not is escaped on the way in.
//!   The columns kept only for the admin filters and display (`type`, `userId`,
//!   `anonymousId`, `event`/`name`, the rejection reason) hold U+FFFD in place of NUL, and a
//!   filter is mapped the same way, so it still matches.
//! - **Counts** (`counts`): each collector adds to rows of its own (`collector` = a random
//!   id per process) in its group's transaction, so no two collectors update one row; a read
//!   sums them. At start a collector folds every other id's rows into its own, so rows of
//!   collectors long gone do not pile up.
//! - **Traffic** (`traffic`): the chart's counts per minute, per collector too, in the same
//!   transaction; a new table of schema version 2, which release 1 runs beside.
//! - **Delivery** (`delivery`): cursors, counts, dead letters and per-destination leases
//!   with an epoch that fences a cursor update by a collector that lost its lease.
//! - **Schema** (`schema`): versioned migrations, applied under a transaction advisory lock
//!   so two collectors starting at once do not race; a collector refuses a database whose
//!   schema needs a newer one.
//!
//! - **Live events**: every collector polls for events after the last it has seen, every
//!   [`LIVE_POLL`], and hands them to its subscribers, its own and the others' alike, in seq
//!   order (seqs become visible in order, so polling after the last one never misses one).
//!   Polling rather than LISTEN/NOTIFY: a notification per commit would need a connection
//!   per collector held in LISTEN, and is lost while it reconnects, so a poll would be needed
//!   anyway; an index lookup five times a second costs little.
//!
//! The store runs its own small runtime (`trackway-postgres` threads): the pool's connections
//! live on it, so the store can be opened and used from any runtime or none, like the SQLite
//! store's threads.

mod counts;
mod delivery;
mod reads;
mod schema;
mod tls;
mod traffic;
mod writer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime as PoolRuntime};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    Appended, BoxFuture, Count, NewEvent, Query, Store, StoreError, StoredEvent, TrafficRow,
};
pub use delivery::PostgresBook;
pub use schema::SCHEMA_VERSION;

/// Connections per collector: the writer's, delivery's reads (one per destination at a time)
/// and the admin API's. PostgreSQL's default `max_connections` (100) then serves about ten
/// collectors.
pub const POOL_SIZE: usize = 8;

/// How long a connection attempt may take before the request it serves gets a 503: long
/// enough for a loaded database across a network, short enough that clients are told to
/// retry well within their own timeouts (Segment's libraries wait 10-15 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request waits for one of the pool's connections.
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// Longest an ingest request waits for its events' commit (queued behind other groups, then
/// its own group's transaction) before it is answered 503. The database may still commit it;
/// the clients' retries are then deduplicated. Within the 10-15 s Segment's libraries wait.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest any other store call (a read, a step of the delivery bookkeeping, a probe, a chunk
/// of pruning) may take before it fails. A connection whose network is black-holed answers
/// nothing and is never reset; [`TCP_USER_TIMEOUT`] closes it only when this host's kernel
/// sees its own data unacknowledged, which a middlebox that accepted the data (a proxy, a
/// connection pooler) defeats. So every call is bounded here too, and a lease renewal that
/// cannot finish counts as failed, which is how a collector cut off from the database learns
/// that it may have lost its leases.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Unacknowledged data on a connection for this long means the database is gone (a network
/// cut rather than a refused connection): the kernel closes the socket, and the request fails
/// instead of hanging (Linux's `TCP_USER_TIMEOUT`).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle time before TCP keepalives probe a pooled connection.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);

/// The transaction advisory lock a writer holds from the allocation of its group's seqs to its
/// commit, so that seqs become visible in the order they are allocated ("trackway" as ASCII,
/// then 2). Any transaction inserting events by hand must take it too.
pub const SEQUENCE_LOCK: i64 = 0x7472_6163_6b77_0002;

/// Worker threads of the store's runtime: the writer and reads run on them, mostly waiting on
/// the network.
const RUNTIME_THREADS: usize = 2;

/// How often the store looks for events stored by any collector of the group, for live
/// subscribers (`/api/stream`, the debugger, delivery's wake-ups): an event shows everywhere
/// within this long (the promise is 1 s).
pub const LIVE_POLL: Duration = Duration::from_millis(200);

/// Most events handed to live subscribers per look.
const LIVE_BATCH: i64 = 1000;

/// Requests waiting for the writer before ingest is pushed back on (bounded memory).
const WRITE_QUEUE: usize = 1024;

/// Live subscribers may lag this many events before they miss some.
const LIVE_BUFFER: usize = 4096;

/// How often rows of the dedup table older than the window are deleted.
const DEDUP_PRUNE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// PostgreSQL-backed [`Store`], shared by every collector on the same database.
pub struct PostgresStore {
    pool: Pool,
    writes: mpsc::Sender<writer::WriteRequest>,
    live: broadcast::Sender<Arc<StoredEvent>>,
    collector: Arc<str>,
    /// Last, so it stops after the handles above are gone.
    runtime: OwnedRuntime,
}

/// A runtime that may be dropped anywhere, even inside another runtime (where dropping a
/// `Runtime` panics): it shuts down in the background, abandoning work nobody awaits.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl OwnedRuntime {
    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(|r| r.handle())
    }
}

/// A tokio-postgres error as a [`StoreError`], with the database's own message when it gave
/// one (never the connection URL, which may hold a password).
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if e.as_db_error().is_none()
        && let Some(certificate) = certificate_error(&e)
    {
        return StoreError::Misconfigured {
            detail: format!(
                "postgres: {e} ({}; check sslmode and sslrootcert)",
                tls::explain(certificate)
            ),
        };
    }
    StoreError::postgres(&e)
}

/// The certificate rustls refused, if that is why `e` happened (tokio-postgres wraps it in an
/// `io::Error`, whose own `source` skips it).
fn certificate_error(e: &tokio_postgres::Error) -> Option<&rustls::CertificateError> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = next {
        let error = match error.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => inner as &(dyn std::error::Error + 'static),
                None => error,
            },
            None => error,
        };
        if let Some(rustls::Error::InvalidCertificate(certificate)) =
            error.downcast_ref::<rustls::Error>()
        {
            return Some(certificate);
        }
        next = error.source();
    }
    None
}

/// A pool error: a connection's own error, or no connection within the wait.
pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        deadpool_postgres::PoolError::Closed => StoreError::stopped("connection pool", "closed"),
        other => StoreError::Unavailable {
            detail: format!("postgres: {other}"),
        },
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`),
    /// creates or migrates its schema, and starts this collector's writer.
    ///
    /// TLS follows libpq's URL parameters `sslmode` (`disable`, `prefer`, the default,
    /// `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file of the roots to
    /// trust, or `system` for Mozilla's): see `tls`.
    ///
    /// Fails when the database is unreachable, or when its schema was written by a newer
    /// release this one cannot work with (the message says which).
    pub fn open(url: &str, dedup_window: Duration) -> Result<PostgresStore, StoreError> {
        let (url, tls) = tls::split(url)?;
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Misconfigured {
                detail: format!("not a postgres url: {e}"),
            })?;
        config
            .ssl_mode(tls.ssl_mode())
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .tcp_user_timeout(TCP_USER_TIMEOUT)
            .application_name("trackway-collector")
            // A 200 follows a flushed commit, whatever the database's default says.
            .options("-c synchronous_commit=on");
        let manager = Manager::from_config(
            config,
            tls.connector()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("trackway-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::stopped("runtime", e))?;
        let runtime = OwnedRuntime(Some(runtime));
        let Some(handle) = runtime.handle().cloned() else {
            return Err(StoreError::stopped("runtime", "it is gone"));
        };
        let pool = {
            // The pool's timeouts need the runtime entered.
            let _entered = handle.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(PoolRuntime::Tokio1)
                .wait_timeout(Some(POOL_WAIT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(|e| StoreError::Misconfigured {
                    detail: format!("postgres: {e}"),
                })?
        };
        let collector: Arc<str> = Arc::from(counts::collector_id()?);
        let window_ms = dedup_window.as_millis() as i64;
        let setup = {
            let pool = pool.clone();
            let collector = Arc::clone(&collector);
            async move {
                let mut client = pool.get().await.map_err(pool_error)?;
                schema::migrate(&mut client).await?;
                counts::adopt_others(&mut client, &collector).await?;
                let row = client
                    .query_one("SELECT coalesce(max(seq), 0) FROM events", &[])
                    .await
                    .map_err(pg_error)?;
                Ok(row.get::<_, i64>(0))
            }
        };
        let last_seq = block_on(&handle, setup)?;
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let (writes, requests) = mpsc::channel(WRITE_QUEUE);
        handle.spawn(
            writer::Writer {
                pool: pool.clone(),
                requests,
                window_ms,
                collector: Arc::clone(&collector),
            }
            .run(),
        );
        handle.spawn(reads::live_loop(
            pool.clone(),
            live.clone(),
            last_seq,
            LIVE_POLL,
            LIVE_BATCH,
        ));
        handle.spawn(reads::prune_dedup_loop(
            pool.clone(),
            window_ms,
            DEDUP_PRUNE_INTERVAL,
        ));
        tracing::info!("store: postgres schema version {SCHEMA_VERSION}, collector {collector}");
        Ok(PostgresStore {
            pool,
            writes,
            live,
            collector,
            runtime,
        })
    }

    /// This collector's id in the database (its counts rows).
    pub fn collector_id(&self) -> &str {
        &self.collector
    }

    /// Runs `work` on the store's runtime, where the pool's connections live, for at most
    /// [`STATEMENT_TIMEOUT`] (then it is dropped, rolling back its transaction).
    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        self.run_within(STATEMENT_TIMEOUT, work)
    }

    /// Runs `work` on the store's runtime for at most `limit`.
    fn run_within<T: Send + 'static>(
        &self,
        limit: Duration,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let bounded = async move {
            tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable {
                    detail: format!("postgres: no answer within {limit:?}"),
                })
            })
        };
        let task = self.runtime.handle().map(|h| h.spawn(bounded));
        Box::pin(async move {
            let Some(task) = task else {
                return Err(StoreError::stopped("runtime", "the store is closed"));
            };
            task.await.map_err(|e| StoreError::stopped("task", e))?
        })
    }

    /// A connection from the pool, on the store's runtime.
    async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
        pool.get().await.map_err(pool_error)
    }
}

/// Runs `work` to completion on `handle`'s runtime, from a thread of its own: the caller may
/// be inside another runtime, where blocking on this one would panic.
fn block_on<T: Send>(
    handle: &tokio::runtime::Handle,
    work: impl Future<Output = Result<T, StoreError>> + Send,
) -> Result<T, StoreError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| handle.block_on(work))
            .join()
            .unwrap_or_else(|_| Err(StoreError::stopped("setup", "it panicked")))
    })
}

impl Store for PostgresStore {
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Appended, StoreError>> {
        // Bounded as a whole, queueing included: behind a group stalled on a dead connection,
        // a request would otherwise wait for that group's timeout and then for its own. The
        // deadline runs on the store's timer, so the caller's runtime needs none, and the
        // request is awaited where it was made (no task per request on the hot path).
        let deadline = self.runtime.handle().map(|handle| {
            let _entered = handle.enter();
            tokio::time::sleep(COMMIT_TIMEOUT)
        });
        Box::pin(async move {
            let Some(deadline) = deadline else {
                return Err(StoreError::stopped("runtime", "the store is closed"));
            };
            let appended = async {
                let (reply, answer) = oneshot::channel();
                self.writes
                    .send(writer::WriteRequest { events, reply })
                    .await
                    .map_err(|_| StoreError::stopped("writer", "its task ended"))?;
                answer
                    .await
                    .map_err(|_| StoreError::stopped("writer", "its task ended"))?
            };
            tokio::select! {
                appended = appended => appended,
                () = deadline => Err(StoreError::Unavailable {
                    detail: format!("postgres: not committed within {COMMIT_TIMEOUT:?}"),
                }),
            }
        })
    }

    fn query(&self, query: Query) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        let pool = self.pool.clone();
        self.run(async move { reads::query(&Self::client(&pool).await?, &query).await })
    }

    fn counts(&self) -> BoxFuture<'_, Result<Vec<Count>, StoreError>> {
        let pool = self.pool.clone();
        self.run(async move { counts::read(&Self::client(&pool).await?).await })
    }

    fn traffic(
        &self,
        since_minute: i64,
        source: Option<&str>,
    ) -> BoxFuture<'_, Result<Vec<TrafficRow>, StoreError>> {
        let pool = self.pool.clone();
        let source = source.map(str::to_owned);
        self.run(async move {
            traffic::read(&Self::client(&pool).await?, since_minute, source.as_deref()).await
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.live.subscribe()
    }

    fn read_after(
        &self,
        source: &str,
        after: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        let pool = self.pool.clone();
        let source = source.to_owned();
        self.run(async move {
            reads::read_after(&Self::client(&pool).await?, &source, after, limit).await
        })
    }

    fn get(&self, seqs: Vec<i64>) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        let pool = self.pool.clone();
        self.run(async move { reads::get(&Self::client(&pool).await?, &seqs).await })
    }

    fn prune(
        &self,
        source: &str,
        received_before: i64,
        up_to: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        let pool = self.pool.clone();
        let source = source.to_owned();
        let collector = Arc::clone(&self.collector);
        self.run(async move {
            let mut client = Self::client(&pool).await?;
            reads::prune(&mut client, &collector, &source, received_before, up_to).await
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let pool = self.pool.clone();
        let collector = Arc::clone(&self.collector);
        self.run(async move {
            // A durable write of its own: an empty transaction would not notice a database
            // that is read-only or out of disk.
            Self::client(&pool)
                .await?
                .execute(
                    "INSERT INTO probe (collector, at) VALUES ($1, $2)
                     ON CONFLICT (collector) DO UPDATE SET at = excluded.at",
                    &[&&*collector, &crate::storage::now_ms()],
                )
                .await
                .map_err(pg_error)
                .map(|_| ())
        })
    }

    fn lag(&self, source: &str, after: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        let pool = self.pool.clone();
        let source = source.to_owned();
        self.run(async move { reads::lag(&Self::client(&pool).await?, &source, after).await })
    }
}

/// `text` with every NUL replaced by U+FFFD: PostgreSQL's `text` refuses NUL. Used for the
/// columns kept for filters and display, and for the filters themselves, so they still match.
pub(crate) fn displayable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A JSON text with any raw NUL escaped. A JSON encoder never writes one (control characters
/// in strings are escaped), so this only guards the commit against a body that is not JSON.
pub(crate) fn storable_body(body: &str) -> std::borrow::Cow<'_, str> {
    if body.contains('\0') {
        std::borrow::Cow::Owned(body.replace('\0', "\\u0000"))
    } else {
        std::borrow::Cow::Borrowed(body)
    }
}
