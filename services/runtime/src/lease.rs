//! A leader lease in the `lexmesh_leases` KV bucket, so that of several replicas of a service
//! exactly one acts (replaces instances, publishes alerts) while all of them keep the state.
//! Taken and renewed by compare-and-set; it lapses when its holder stops renewing it.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use lexmesh_protocol::time::now_ms;
use serde::{Deserialize, Serialize};

/// The lease's value.
#[derive(Debug, Serialize, Deserialize)]
struct Held {
    holder: String,
    expires_ms: f64,
}

/// One replica's view of a lease.
pub struct Lease {
    key: &'static str,
    holder: String,
    ttl: Duration,
    revision: Option<u64>,
    last_try: Option<Instant>,
    held: bool,
}

/// What a [`Lease::tick`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// Nothing changed.
    Same,
    /// This replica now leads.
    Gained,
    /// It no longer does.
    Lost,
}

impl Lease {
    /// The lease `key`, held by `holder` for `ttl` after each renewal.
    pub fn new(key: &'static str, holder: String, ttl: Duration) -> Self {
        Self {
            key,
            holder,
            ttl,
            revision: None,
            last_try: None,
            held: false,
        }
    }

    /// True while this replica holds the lease.
    pub fn held(&self) -> bool {
        self.held
    }

    /// Renews (or tries to take) the lease when a third of its ttl has passed since the last
    /// try; says whether leadership changed.
    pub async fn tick(&mut self, kv: &kv::Store) -> Leadership {
        if self.last_try.is_some_and(|t| t.elapsed() < self.ttl / 3) {
            return Leadership::Same;
        }
        self.last_try = Some(Instant::now());
        let now = self.renew(kv).await;
        let was = std::mem::replace(&mut self.held, now);
        match (was, now) {
            (false, true) => Leadership::Gained,
            (true, false) => Leadership::Lost,
            _ => Leadership::Same,
        }
    }

    async fn renew(&mut self, kv: &kv::Store) -> bool {
        let now = now_ms();
        let lease = Held {
            holder: self.holder.clone(),
            expires_ms: now + self.ttl.as_secs_f64() * 1000.0,
        };
        let Ok(body) = serde_json::to_vec(&lease) else {
            return false;
        };
        let current = match kv.entry(self.key).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::debug!(lease = self.key, "cannot read the lease: {e}");
                return false;
            }
        };
        let written = match current {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let held: Option<Held> = serde_json::from_slice(&entry.value).ok();
                let ours = held.as_ref().is_some_and(|l| l.holder == self.holder);
                let expired = held.as_ref().is_none_or(|l| l.expires_ms < now);
                if !(ours || expired) {
                    return false;
                }
                kv.update(self.key, body.into(), entry.revision).await.ok()
            }
            Some(entry) => kv.update(self.key, body.into(), entry.revision).await.ok(),
            None => kv.create(self.key, body.into()).await.ok(),
        };
        self.revision = written;
        written.is_some()
    }

    /// Lets another replica lead at once (orderly shutdown).
    pub async fn release(&mut self, kv: &kv::Store) {
        let Some(revision) = self.revision.take() else {
            return;
        };
        if !std::mem::take(&mut self.held) {
            return;
        }
        let expired = Held {
            holder: self.holder.clone(),
            expires_ms: 0.0,
        };
        if let Ok(body) = serde_json::to_vec(&expired)
            && let Err(e) = kv.update(self.key, body.into(), revision).await
        {
            // The lease then runs out by itself.
            tracing::debug!("cannot release the {} lease at once: {e}", self.key);
        }
    }
}
