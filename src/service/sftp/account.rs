//! What one logged-in user may do: their paths, the policy each operation
//! passes, and the access record each operation leaves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::bucket::{Bucket, StoreError};
use super::paths::{normalize, place, Place};
use crate::config::sftp::{Sftp, User};
use crate::observe::metrics::RelayMetrics;
use crate::policy::action::{Classified, Name, Touch};
use crate::policy::statement::{Decision, Principal};

/// Why an operation was refused or failed, for the client.
#[derive(Debug)]
pub enum Refusal {
    /// Outside the user's root, read-only, or the policy said no.
    Denied(String),
    /// No such file or directory.
    Missing(String),
    /// The operation cannot be done on object storage.
    Unsupported(String),
    /// The store failed.
    Failed(String),
}

impl Refusal {
    /// The `result=` of the access record.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Denied(_) => "denied",
            Refusal::Missing(_) => "missing",
            Refusal::Unsupported(_) => "unsupported",
            Refusal::Failed(_) => "failed",
        }
    }

    /// The message for the client.
    pub fn message(&self) -> &str {
        match self {
            Refusal::Denied(m)
            | Refusal::Missing(m)
            | Refusal::Unsupported(m)
            | Refusal::Failed(m) => m,
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        match e {
            StoreError::NotFound => Refusal::Missing("no such file or directory".into()),
            StoreError::Denied(m) => Refusal::Denied(format!("the store refused: {m}")),
            StoreError::Failed(m) => Refusal::Failed(m),
        }
    }
}

/// A session's user, after authentication.
pub struct Account {
    /// The relay's name, for log lines.
    pub relay: String,
    /// Who logged in.
    pub user: User,
    /// The relay's settings.
    pub cfg: Arc<Sftp>,
    /// The user's bucket.
    pub bucket: Arc<Bucket>,
    /// The client (after PROXY protocol).
    pub peer: SocketAddr,
    /// The relay's counters.
    pub metrics: Arc<RelayMetrics>,
}

impl Account {
    /// The login directory: the mount.
    pub fn home(&self) -> &str {
        &self.cfg.mount
    }

    /// `path` made absolute and where it leads.
    pub fn locate(&self, path: &str) -> (String, Place) {
        let abs = normalize(self.home(), path);
        let p = place(&self.cfg.mount, &self.user.prefix, &abs);
        (abs, p)
    }

    /// The object key `path` names, or a refusal when it is outside the
    /// user's root or is the root itself.
    pub fn object_key(&self, path: &str) -> Result<String, Refusal> {
        match self.locate(path) {
            (_, Place::Inside { key, root: false }) => Ok(key),
            (abs, Place::Inside { .. }) | (abs, Place::Above { .. }) => {
                Err(Refusal::Denied(format!("{abs} is a directory")))
            }
            (abs, Place::Outside) => Err(Refusal::Denied(format!(
                "{abs} is outside {}, the only place this server has",
                self.cfg.mount
            ))),
        }
    }

    /// Whether the user may do OSS action `action` on `key`: writes need a
    /// user who is not read-only, and everything passes the endpoint policy
    /// with the user's name.
    pub fn allow(&self, action: &'static str, key: &str) -> Result<(), Refusal> {
        let writes = !matches!(action, "oss:GetObject" | "oss:ListObjects");
        if writes && self.user.read_only {
            return Err(Refusal::Denied(format!(
                "user {} is read-only",
                self.user.name
            )));
        }
        let c = Classified {
            touches: vec![Touch {
                action,
                bucket: Some(Name::Known(self.bucket.name.clone())),
                key: (action != "oss:ListObjects").then(|| Name::Known(key.to_string())),
            }],
            access_key: None,
        };
        let who = Principal {
            access_key: None,
            source: self.peer.ip(),
            user: Some(&self.user.name),
        };
        match self.cfg.policy.decide_as(&c, &who) {
            Decision::Allowed(_) => {
                self.metrics.decided(true);
                Ok(())
            }
            Decision::Denied { reason, .. } => {
                self.metrics.decided(false);
                self.metrics
                    .refused(crate::observe::metrics::Refused::Policy);
                Err(Refusal::Denied(reason))
            }
        }
    }

    /// Writes the access record of one operation.
    pub fn record(
        &self,
        op: &str,
        key: &str,
        bytes: u64,
        started: Instant,
        result: Result<(), &Refusal>,
    ) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        // Each operation counts as a request, with the HTTP status class
        // its outcome would have had at the store.
        let status = match result {
            Ok(()) => 200,
            Err(Refusal::Denied(_)) => 403,
            Err(Refusal::Missing(_)) => 404,
            Err(Refusal::Unsupported(_)) => 400,
            Err(Refusal::Failed(_)) => 500,
        };
        self.metrics.request(Some(&self.bucket.name), status);
        match op {
            "put" => self.metrics.from_client(bytes),
            "get" => self.metrics.to_client(bytes),
            _ => {}
        }
        match result {
            Ok(()) => tracing::info!(
                relay = %self.relay,
                "sftp user={} client={} op={op} bucket={} key={key} bytes={bytes} duration_ms={ms:.1} result=ok",
                self.user.name, self.peer, self.bucket.name
            ),
            Err(r) => tracing::warn!(
                relay = %self.relay,
                "sftp user={} client={} op={op} bucket={} key={key} bytes={bytes} duration_ms={ms:.1} result={}: {}",
                self.user.name, self.peer, self.bucket.name, r.label(), r.message()
            ),
        }
    }
}
