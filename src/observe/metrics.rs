//! The relay's metrics. Each layer bumps plain atomic counters as things
//! happen (a connection accepted, bytes moved, a request decided); the
//! admin listener reads them at scrape time and writes Prometheus text
//! through the `prometheus-client` crate ([`Metrics::encode`]). Nothing is
//! registered on first use: every series that can exist is there from
//! start-up, at 0, so a dashboard's `rate()` and an alert's `absent()`
//! behave from the first scrape.
//!
//! Label values stay few: a relay's name, a fixed set of reasons, and for
//! requests only the bucket names the relay's policy spells out (globs
//! and every other bucket count as `other`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::config::{RelayConfig, Service};

/// Why a connection (or, for `Policy`, a request) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client ACL.
    Acl,
    /// The connection limit.
    Limit,
    /// A missing or broken PROXY protocol header.
    ProxyProtocol,
    /// The client's TLS handshake failed.
    Tls,
    /// The bucket or endpoint policy.
    Policy,
}

impl Refused {
    const ALL: [Refused; 5] = [
        Refused::Acl,
        Refused::Limit,
        Refused::ProxyProtocol,
        Refused::Tls,
        Refused::Policy,
    ];

    fn label(self) -> &'static str {
        match self {
            Refused::Acl => "acl",
            Refused::Limit => "limit",
            Refused::ProxyProtocol => "proxy_protocol",
            Refused::Tls => "tls",
            Refused::Policy => "policy",
        }
    }
}

/// Why an upstream connection could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// The upstream refused it (RST to the SYN).
    Refused,
    /// No answer within `connect_timeout`.
    Timeout,
    /// The name did not resolve.
    Dns,
    /// Anything else: reset, unreachable, a failed TLS handshake.
    Reset,
}

impl ConnectError {
    const ALL: [ConnectError; 4] = [
        ConnectError::Refused,
        ConnectError::Timeout,
        ConnectError::Dns,
        ConnectError::Reset,
    ];

    fn label(self) -> &'static str {
        match self {
            ConnectError::Refused => "refused",
            ConnectError::Timeout => "timeout",
            ConnectError::Dns => "dns",
            ConnectError::Reset => "reset",
        }
    }
}

/// Upper bounds of the connect-time histogram, in seconds: loopback and
/// same-zone connects land in the first buckets, a cross-region or
/// retried one in the last.
pub const CONNECT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One relay's counters.
#[derive(Debug)]
pub struct RelayMetrics {
    name: String,
    connections: AtomicU64,
    /// The connection limits' semaphores: what is taken of them is open.
    /// More than one while a reloaded relay's predecessor drains.
    limits: std::sync::Mutex<Vec<(std::sync::Weak<tokio::sync::Semaphore>, usize)>>,
    refused: [AtomicU64; 5],
    from_client: AtomicU64,
    to_client: AtomicU64,
    connect_buckets: [AtomicU64; CONNECT_BUCKETS.len()],
    connect_count: AtomicU64,
    connect_sum_ns: AtomicU64,
    connect_errors: [AtomicU64; 4],
    /// An http gateway or forward proxy: it counts requests.
    requests_counted: bool,
    /// The bucket label values: the policy's plain names, then `other`.
    buckets: Vec<String>,
    bucket_index: HashMap<String, usize>,
    /// `buckets.len() × 5` request counters, by bucket then status class.
    requests: Vec<AtomicU64>,
    decisions: [AtomicU64; 2],
    udp_active: AtomicI64,
    udp_datagrams: [AtomicU64; 2],
}

impl RelayMetrics {
    /// Zeroed counters for relay `cfg`.
    pub fn new(cfg: &RelayConfig) -> RelayMetrics {
        let policy = match &cfg.service {
            Service::Http(g) | Service::Sni(g) => Some(&g.policy),
            Service::Proxy(d) => d.buckets.as_ref(),
            _ => None,
        };
        let mut buckets: Vec<String> = policy.map(|p| p.named_buckets()).unwrap_or_default();
        // An sftp relay's users name their buckets; its policy may name more.
        #[cfg(feature = "sftp")]
        if let Service::Sftp(s) = &cfg.service {
            for b in s
                .users
                .iter()
                .map(|u| u.bucket.clone())
                .chain(s.policy.named_buckets())
            {
                if !buckets.contains(&b) {
                    buckets.push(b);
                }
            }
        }
        buckets.push("other".into());
        let bucket_index = buckets
            .iter()
            .enumerate()
            .map(|(i, b)| (b.clone(), i))
            .collect();
        let requests = (0..buckets.len() * STATUS_CLASSES.len())
            .map(|_| AtomicU64::new(0))
            .collect();
        RelayMetrics {
            requests_counted: match cfg.service {
                Service::Http(_) | Service::Proxy(_) => true,
                #[cfg(feature = "sftp")]
                Service::Sftp(_) => true,
                _ => false,
            },
            name: cfg.name.clone(),
            connections: AtomicU64::new(0),
            limits: std::sync::Mutex::new(Vec::new()),
            refused: Default::default(),
            from_client: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            connect_buckets: Default::default(),
            connect_count: AtomicU64::new(0),
            connect_sum_ns: AtomicU64::new(0),
            connect_errors: Default::default(),
            buckets,
            bucket_index,
            requests,
            decisions: Default::default(),
            udp_active: AtomicI64::new(0),
            udp_datagrams: Default::default(),
        }
    }

    /// A connection was accepted (refused ones included: they are also
    /// counted by reason).
    pub fn accepted(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Open connections are read off `limit`, the relay's connection limit
    /// of `max` permits: each open connection holds one, so counting them
    /// costs the connections nothing.
    pub fn track_active(&self, limit: &Arc<tokio::sync::Semaphore>, max: usize) {
        if let Ok(mut all) = self.limits.lock() {
            all.retain(|(l, _)| l.strong_count() > 0);
            all.push((Arc::downgrade(limit), max));
        }
    }

    fn active(&self) -> i64 {
        let Ok(all) = self.limits.lock() else {
            return 0;
        };
        all.iter()
            .filter_map(|(l, max)| {
                l.upgrade()
                    .map(|l| max.saturating_sub(l.available_permits()))
            })
            .sum::<usize>() as i64
    }

    /// A connection (or request) was refused.
    pub fn refused(&self, why: Refused) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `n` bytes moved from a client toward the upstream.
    #[inline]
    pub fn from_client(&self, n: u64) {
        self.from_client.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` bytes moved to a client.
    #[inline]
    pub fn to_client(&self, n: u64) {
        self.to_client.fetch_add(n, Ordering::Relaxed);
    }

    /// An upstream connection was made in `took`.
    pub fn connected(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = CONNECT_BUCKETS.iter().position(|b| secs <= *b) {
            self.connect_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.connect_count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.connect_sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// An upstream connection failed.
    pub fn connect_failed(&self, why: ConnectError) {
        self.connect_errors[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// An http gateway request for `bucket` ended with `status`.
    pub fn request(&self, bucket: Option<&str>, status: u16) {
        let other = self.buckets.len() - 1;
        let b = bucket
            .and_then(|b| self.bucket_index.get(b).copied())
            .unwrap_or(other);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.requests.get(b * STATUS_CLASSES.len() + class) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The policy allowed (`true`) or denied a request or connection.
    pub fn decided(&self, allowed: bool) {
        self.decisions[usize::from(!allowed)].fetch_add(1, Ordering::Relaxed);
    }

    /// A UDP session opened (`+1`) or ended (`-1`).
    pub fn udp_session(&self, delta: i64) {
        self.udp_active.fetch_add(delta, Ordering::Relaxed);
    }

    /// `n` datagrams moved from (`true`) or to a client.
    pub fn datagrams(&self, from_client: bool, n: u64) {
        self.udp_datagrams[usize::from(!from_client)].fetch_add(n, Ordering::Relaxed);
    }
}

/// What a DNS query came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsResult {
    /// Answered from the configured names.
    Answered,
    /// Passed to the upstream resolver, which answered.
    Forwarded,
    /// Refused (the ACL, no upstream, a failed upstream), malformed, or
    /// dropped.
    Refused,
}

impl DnsResult {
    const ALL: [DnsResult; 3] = [
        DnsResult::Answered,
        DnsResult::Forwarded,
        DnsResult::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            DnsResult::Answered => "answered",
            DnsResult::Forwarded => "forwarded",
            DnsResult::Refused => "refused",
        }
    }
}

/// Every relay's counters and the process's own.
#[derive(Debug, Default)]
pub struct Metrics {
    relays: RwLock<Vec<Arc<RelayMetrics>>>,
    dns: [AtomicU64; 3],
    reloads: [AtomicU64; 2],
    last_reload: AtomicU64,
    draining: AtomicBool,
    serving: AtomicBool,
}

impl Metrics {
    /// Zeroed process metrics; the start counts as the first successful
    /// load of the config.
    pub fn new() -> Metrics {
        let m = Metrics::default();
        m.last_reload.store(unix_now(), Ordering::Relaxed);
        m
    }

    /// Relay `cfg`'s counters: those of a relay of the same name and the
    /// same bucket labels (a reload keeps counting where it was), else new
    /// ones at 0.
    pub fn add_relay(&self, cfg: &RelayConfig) -> Arc<RelayMetrics> {
        let fresh = Arc::new(RelayMetrics::new(cfg));
        let Ok(mut all) = self.relays.write() else {
            return fresh;
        };
        if let Some(i) = all.iter().position(|r| r.name == cfg.name) {
            if all[i].buckets == fresh.buckets && all[i].requests_counted == fresh.requests_counted
            {
                return all[i].clone();
            }
            all.remove(i);
        }
        all.push(fresh.clone());
        fresh
    }

    /// Forgets the counters of relays not named in `names` (removed by a
    /// reload).
    pub fn keep_only(&self, names: &[&str]) {
        if let Ok(mut all) = self.relays.write() {
            all.retain(|r| names.contains(&r.name.as_str()));
        }
    }

    /// A DNS query was answered (or not).
    pub fn dns_query(&self, result: DnsResult) {
        self.dns[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A config reload succeeded or failed.
    pub fn reloaded(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
        if ok {
            self.last_reload.store(unix_now(), Ordering::Relaxed);
        }
    }

    /// Every relay is bound and serving.
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    /// The process is draining (after SIGTERM).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether a load balancer should send new connections here.
    pub fn ready(&self) -> bool {
        self.serving.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// The Prometheus text exposition of everything.
    pub fn encode(self: &Arc<Metrics>) -> String {
        // A registry per scrape is a few allocations; it keeps the
        // registry owned by its one user and the counters free of it.
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(self.clone())));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The collector the admin listener's registry calls on each scrape.
#[derive(Debug)]
struct Scrape(Arc<Metrics>);

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Writes one metric family: its descriptor, then one sample per labels.
fn family<'a, M: EncodeMetric + 'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Vec<(&'a str, String)>, M)>,
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, m) in samples {
        let labels: Vec<(&str, String)> = labels;
        m.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let m = &self.0;
        let relays: Vec<Arc<RelayMetrics>> = m.relays.read().map(|r| r.clone()).unwrap_or_default();
        let relay = |r: &RelayMetrics| ("relay", r.name.clone());
        family(
            &mut enc,
            "ossrelay_build_info",
            "The running version.",
            MetricType::Gauge,
            [(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                ConstGauge::new(1i64),
            )],
        )?;
        family(
            &mut enc,
            "ossrelay_connections",
            "Connections accepted.",
            MetricType::Counter,
            relays
                .iter()
                .map(|r| (vec![relay(r)], ConstCounter::new(load(&r.connections)))),
        )?;
        family(
            &mut enc,
            "ossrelay_connections_active",
            "Connections open now.",
            MetricType::Gauge,
            relays
                .iter()
                .map(|r| (vec![relay(r)], ConstGauge::new(r.active()))),
        )?;
        family(
            &mut enc,
            "ossrelay_connections_refused",
            "Connections refused, by reason (policy: requests and connections the policy denied).",
            MetricType::Counter,
            relays.iter().flat_map(|r| {
                Refused::ALL.iter().map(move |why| {
                    (
                        vec![relay(r), ("reason", why.label().to_string())],
                        ConstCounter::new(load(&r.refused[*why as usize])),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "ossrelay_bytes",
            "Bytes relayed, counted as they move.",
            MetricType::Counter,
            relays.iter().flat_map(|r| {
                [
                    ("from_client", load(&r.from_client)),
                    ("to_client", load(&r.to_client)),
                ]
                .map(|(dir, n)| {
                    (
                        vec![relay(r), ("direction", dir.to_string())],
                        ConstCounter::new(n),
                    )
                })
            }),
        )?;
        {
            let mut metric = enc.encode_descriptor(
                "ossrelay_upstream_connect_duration_seconds",
                "Time to connect to an upstream.",
                None,
                MetricType::Histogram,
            )?;
            for r in &relays {
                let labels = vec![relay(r)];
                // Per bucket, not cumulative: the encoder adds them up.
                let mut buckets: Vec<(f64, u64)> = CONNECT_BUCKETS
                    .iter()
                    .zip(&r.connect_buckets)
                    .map(|(b, n)| (*b, load(n)))
                    .collect();
                let count = load(&r.connect_count);
                let below: u64 = buckets.iter().map(|(_, n)| n).sum();
                buckets.push((f64::INFINITY, count.saturating_sub(below)));
                let sum = load(&r.connect_sum_ns) as f64 / 1e9;
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum, count, &buckets, None,
                    )?;
            }
        }
        family(
            &mut enc,
            "ossrelay_upstream_connect_errors",
            "Upstream connections that failed, by reason.",
            MetricType::Counter,
            relays.iter().flat_map(|r| {
                ConnectError::ALL.iter().map(move |why| {
                    (
                        vec![relay(r), ("reason", why.label().to_string())],
                        ConstCounter::new(load(&r.connect_errors[*why as usize])),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "ossrelay_requests",
            "http gateway requests, by bucket (names from the policy, else other) and status class.",
            MetricType::Counter,
            relays
                .iter()
                .filter(|r| r.requests_counted)
                .flat_map(|r| {
                    r.buckets.iter().enumerate().flat_map(move |(b, name)| {
                        STATUS_CLASSES.iter().enumerate().map(move |(c, class)| {
                            (
                                vec![
                                    relay(r),
                                    ("bucket", name.clone()),
                                    ("status_class", class.to_string()),
                                ],
                                ConstCounter::new(load(&r.requests[b * STATUS_CLASSES.len() + c])),
                            )
                        })
                    })
                }),
        )?;
        family(
            &mut enc,
            "ossrelay_policy_decisions",
            "Policy decisions on requests and connections.",
            MetricType::Counter,
            relays.iter().flat_map(|r| {
                [("allow", 0), ("deny", 1)].map(|(d, i)| {
                    (
                        vec![relay(r), ("decision", d.to_string())],
                        ConstCounter::new(load(&r.decisions[i])),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "ossrelay_udp_sessions_active",
            "UDP sessions open now.",
            MetricType::Gauge,
            relays.iter().map(|r| {
                (
                    vec![relay(r)],
                    ConstGauge::new(r.udp_active.load(Ordering::Relaxed)),
                )
            }),
        )?;
        family(
            &mut enc,
            "ossrelay_udp_datagrams",
            "UDP datagrams relayed.",
            MetricType::Counter,
            relays.iter().flat_map(|r| {
                [("from_client", 0), ("to_client", 1)].map(|(d, i)| {
                    (
                        vec![relay(r), ("direction", d.to_string())],
                        ConstCounter::new(load(&r.udp_datagrams[i])),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "ossrelay_dns_queries",
            "DNS responder queries, by result.",
            MetricType::Counter,
            DnsResult::ALL.iter().map(|res| {
                (
                    vec![("result", res.label().to_string())],
                    ConstCounter::new(load(&m.dns[*res as usize])),
                )
            }),
        )?;
        family(
            &mut enc,
            "ossrelay_config_reloads",
            "Config reloads, by result.",
            MetricType::Counter,
            [("success", 0), ("error", 1)].map(|(res, i)| {
                (
                    vec![("result", res.to_string())],
                    ConstCounter::new(load(&m.reloads[i])),
                )
            }),
        )?;
        family(
            &mut enc,
            "ossrelay_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully (Unix time).",
            MetricType::Gauge,
            [(Vec::new(), ConstGauge::new(load(&m.last_reload) as i64))],
        )?;
        family(
            &mut enc,
            "ossrelay_log_lines_dropped",
            "Log lines dropped because the log destination was slower than the relay (log.when_full = \"drop\").",
            MetricType::Counter,
            [(Vec::new(), ConstCounter::new(super::batch::dropped_total()))],
        )?;
        family(
            &mut enc,
            "ossrelay_draining",
            "1 while the process drains after SIGTERM.",
            MetricType::Gauge,
            [(
                Vec::new(),
                ConstGauge::new(i64::from(m.draining.load(Ordering::Relaxed))),
            )],
        )?;
        Ok(())
    }
}
