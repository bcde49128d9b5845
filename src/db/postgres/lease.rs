//! The database-level upgrade lock that holds behind a transaction-pooling pooler: a
//! transaction-level advisory lock in every locked transaction, and for a lock that must
//! outlive commits a lease row in `upgrader_lock`, renewed by a heartbeat thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use postgres::types::Type;
use postgres::{Client, NoTls, SimpleQueryMessage};

use super::{config, db_error, DbError, ServerUrl};

/// How long a lease row keeps others out without being renewed.
pub(super) const LEASE: Duration = Duration::from_secs(30);

/// How often the heartbeat renews a lease.
pub(super) const RENEW_EVERY: Duration = Duration::from_secs(5);

/// A holder whose heartbeat has not renewed its lease for this long gives it up (before
/// anyone else may take it over at [`LEASE`]).
pub(super) const LOST_AFTER: Duration = Duration::from_secs(20);

/// The longest pause between two looks at a held lock.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The lease of a [`LockSpan::Session`] lock: this process's row in `upgrader_lock`.
pub(super) struct Lease {
    /// Says which process's row it is; unique per `lock` call.
    pub(super) token: String,
    pub(super) state: LeaseState,
    pub(super) heartbeat: Option<Heartbeat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseState {
    /// The row is committed: others wait for it.
    Held,
    /// The row was written in the open transaction; it holds once that commits.
    Pending,
    /// The row was rolled back with its transaction: the next `begin` claims it again.
    Unclaimed,
}

/// The row of `upgrader_lock` (one at most), as a waiter sees it.
#[derive(Debug, Clone)]
pub(super) struct LeaseRow {
    pub(super) token: String,
    pub(super) host: String,
    pub(super) pid: i64,
    pub(super) since: String,
    pub(super) expired: bool,
}

impl LeaseRow {
    /// Whether someone else holds it and may still be alive: its lease has not expired,
    /// and it is not a process of this host that is gone (taken over at once).
    pub(super) fn blocks(&self, token: Option<&str>) -> bool {
        if token == Some(self.token.as_str()) || self.expired {
            return false;
        }
        self.host != this_host() || process_alive(self.pid)
    }
}

/// Renews a lease from a thread of its own, over a connection of its own (opened when
/// first needed), so that a long statement or a step outside any transaction keeps it.
pub(super) struct Heartbeat {
    pub(super) stop: mpsc::Sender<()>,
    pub(super) lost: Arc<AtomicBool>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    pub(super) fn start(url: ServerUrl, token: String) -> Heartbeat {
        let (stop, stopped) = mpsc::channel::<()>();
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let thread = std::thread::Builder::new()
            .name("upgrader-lease".into())
            .spawn(move || {
                let mut client: Option<Client> = None;
                let mut renewed = Instant::now();
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(RENEW_EVERY) {
                    match renew(&url, &mut client, &token) {
                        Ok(true) => renewed = Instant::now(),
                        Ok(false) => {
                            log::error!(
                                "the database upgrade lock was taken over by another process"
                            );
                            flag.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(error) => {
                            log::warn!("cannot renew the database upgrade lock: {error}");
                            client = None;
                            if renewed.elapsed() >= LOST_AFTER {
                                flag.store(true, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                }
            })
            .ok();
        Heartbeat { stop, lost, thread }
    }

    pub(super) fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One renewal: `false` when the row is no longer this holder's.
pub(super) fn renew(
    url: &ServerUrl,
    client: &mut Option<Client>,
    token: &str,
) -> Result<bool, DbError> {
    if client.is_none() {
        let mut config = config(url)?;
        config.connect_timeout(RENEW_EVERY);
        *client = Some(config.connect(NoTls).map_err(|e| {
            DbError::new(format!(
                "cannot connect to {url}: {}",
                url.scrub(&db_error(e).message)
            ))
        })?);
    }
    let Some(client) = client.as_mut() else {
        return Ok(false);
    };
    let changed = client
        .execute_typed(
            "UPDATE upgrader_lock SET expires_at = clock_timestamp() + $2 * interval '1 second' \
             WHERE token = $1",
            &[(&token, Type::TEXT), (&LEASE.as_secs_f64(), Type::FLOAT8)],
        )
        .map_err(db_error)?;
    Ok(changed > 0)
}

/// This host's name, as the lease row records it.
/// This host as a lease row names it: the host name, and the PID namespace when there is
/// one to tell (containers sharing the host's name but not its processes must not take
/// each other's leases over as "a process of this host that is gone").
pub(super) fn this_host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let name = gethostname::gethostname().to_string_lossy().into_owned();
        match std::fs::read_link("/proc/self/ns/pid") {
            Ok(namespace) => format!("{name} ({})", namespace.display()),
            Err(_) => name,
        }
    })
}

/// Whether a process of this host is alive; `true` when that cannot be known (no
/// `/proc`), so that a lease is then only ever taken over once it has expired.
pub(super) fn process_alive(pid: i64) -> bool {
    let proc = std::path::Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    pid <= 0 || proc.join(pid.to_string()).exists()
}

/// A token no other lock holder has: host, process, time and a per-process counter.
pub(super) fn new_token() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}:{}:{nanos:x}:{}",
        this_host(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The error for a lock another live holder has, where waiting is not possible (inside a
/// transaction that holds the transaction-level lock the holder needs).
pub(super) fn held_by(holder: &LeaseRow) -> DbError {
    DbError::new(format!(
        "the database upgrade lock is held by upgrader pid {} on host {} since {}",
        holder.pid, holder.host, holder.since
    ))
}

/// What a look at the transaction-level lock found.
pub(super) enum Look {
    /// Taken, in the open transaction; the lease row, when it was asked for.
    Free(Option<LeaseRow>),
    /// Another transaction holds it.
    Busy,
}

/// A wait for the lock: the holder last reported, and the pause before the next look.
#[derive(Default)]
pub(super) struct Waiting {
    pub(super) told: Option<String>,
    pub(super) pause: Duration,
}

/// The lease table: one row at most, the holder of a lock that outlives commits.
pub(super) const CREATE_LEASE_TABLE: &str = "CREATE TABLE upgrader_lock (\
     id integer PRIMARY KEY CHECK (id = 1), \
     token text NOT NULL, \
     host text NOT NULL, \
     pid bigint NOT NULL, \
     acquired_at timestamptz NOT NULL, \
     expires_at timestamptz NOT NULL)";

/// The lease row, as text columns: token, host, pid, since, expired.
pub(super) const LEASE_ROW: &str = "SELECT token, host, pid::text, acquired_at::text, \
     (expires_at <= clock_timestamp())::text FROM upgrader_lock WHERE id = 1";

/// The lease row among a simple query's answers.
pub(super) fn lease_row(messages: &[SimpleQueryMessage]) -> Option<LeaseRow> {
    messages.iter().rev().find_map(|message| match message {
        SimpleQueryMessage::Row(row) if row.len() == 5 => Some(LeaseRow {
            token: row.get(0)?.to_string(),
            host: row.get(1)?.to_string(),
            pid: row.get(2)?.parse().ok()?,
            since: row.get(3)?.to_string(),
            expired: row.get(4)? == "true",
        }),
        _ => None,
    })
}
