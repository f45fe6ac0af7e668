//! The last day of the audit trail, kept in memory for the security console: counts in
//! five-minute buckets and the latest security-relevant records. Fed by the writer thread with
//! every record it takes (never by a request), so the request path pays nothing for it, and at
//! start with what earlier processes wrote, read back from the trail (`recall`).
//!
//! Bounded whatever the traffic: 289 buckets, at most [`TOP_KEYS`] distinct users and
//! addresses counted per bucket (a flood from many addresses still shows its largest
//! senders, which arrive first), and the latest [`RECENT`] records.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{AuditEvent, EventKind, Outcome};

mod recall;
pub(crate) use recall::recall_in_background;

/// Width of one bucket, in seconds.
pub const BUCKET_SECONDS: u64 = 300;
/// Buckets in a day.
const DAY_BUCKETS: u64 = 86_400 / BUCKET_SECONDS;
/// Distinct users (and addresses) counted per bucket; later ones count as "others".
pub const TOP_KEYS: usize = 64;
/// Security-relevant records kept for the events page.
pub const RECENT: usize = 2_000;

/// One security-relevant record, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    /// The record's `seq` in the trail.
    pub seq: u64,
    /// When it was written (unix seconds).
    pub at: u64,
    /// Its kind, kebab-case as in the file.
    pub event: &'static str,
    /// Its reason (a denial's), kebab-case.
    pub reason: Option<&'static str>,
    /// The user it is about (for an admin call, the user it names).
    pub user: Option<String>,
    /// The user's entity.
    pub entity: Option<String>,
    /// The app.
    pub app: Option<String>,
    /// The identity provider.
    pub idp: Option<String>,
    /// The client address.
    pub client_ip: Option<IpAddr>,
    /// Method and path, for a request.
    pub request: Option<String>,
    /// The answer's status.
    pub status: Option<u16>,
    /// Who acted (an admin token's name, a console user, `SIGHUP`).
    pub operator: Option<String>,
    /// The record's detail.
    pub detail: Option<String>,
}

/// What the events page asks for; every field is optional and they all must match.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// The user (exact).
    pub user: Option<String>,
    /// The entity (exact).
    pub entity: Option<String>,
    /// The app (exact).
    pub app: Option<String>,
    /// The reason, or the event kind (exact, kebab-case).
    pub reason: Option<String>,
    /// Only records at or after this time (unix seconds).
    pub since: u64,
}

impl EventFilter {
    fn admits(&self, r: &Recent) -> bool {
        let same = |wanted: &Option<String>, have: Option<&str>| {
            wanted.as_deref().is_none_or(|w| have == Some(w))
        };
        r.at >= self.since
            && same(&self.user, r.user.as_deref())
            && same(&self.entity, r.entity.as_deref())
            && same(&self.app, r.app.as_deref())
            && self
                .reason
                .as_deref()
                .is_none_or(|w| r.reason == Some(w) || r.event == w)
    }
}

/// Counts over a span of time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests answered (forwarded or refused).
    pub requests: u64,
    /// Requests refused.
    pub denied: u64,
    /// Refusals by reason, most first.
    pub denials: Vec<(&'static str, u64)>,
    /// Failed sign-ins by (provider, reason), most first.
    pub sign_in_failures: Vec<((String, String), u64)>,
    /// Requests over a rate limit.
    pub rate_limited: u64,
    /// The users refused most, most first (at most ten).
    pub top_denied_users: Vec<(String, u64)>,
    /// The addresses refused most, most first (at most ten).
    pub top_denied_addresses: Vec<(IpAddr, u64)>,
}

/// Requests and refusals in one slice of a chart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slice {
    /// Start of the slice (unix seconds).
    pub start: u64,
    /// Requests answered.
    pub requests: u64,
    /// Of which refused.
    pub denied: u64,
}

/// The overview: the last hour and the last day.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// The last hour.
    pub hour: Totals,
    /// The last day.
    pub day: Totals,
    /// The last hour in twelve five-minute slices, oldest first.
    pub hour_slices: Vec<Slice>,
    /// The last day in 24 one-hour slices, oldest first.
    pub day_slices: Vec<Slice>,
    /// Since when this process has been counting (unix seconds).
    pub since: u64,
}

/// Five minutes of counts.
#[derive(Debug, Default)]
struct Bucket {
    start: u64,
    counts: Counts,
}

/// What a bucket counts, and what several add up to.
#[derive(Debug, Default)]
struct Counts {
    requests: u64,
    denied: u64,
    rate_limited: u64,
    denials: HashMap<&'static str, u64>,
    sign_in_failures: HashMap<(String, String), u64>,
    denied_users: HashMap<String, u64>,
    denied_addresses: HashMap<IpAddr, u64>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.denied += other.denied;
        self.rate_limited += other.rate_limited;
        for (reason, n) in &other.denials {
            *self.denials.entry(reason).or_default() += n;
        }
        for (key, n) in &other.sign_in_failures {
            *self.sign_in_failures.entry(key.clone()).or_default() += n;
        }
        for (user, n) in &other.denied_users {
            *self.denied_users.entry(user.clone()).or_default() += n;
        }
        for (address, n) in &other.denied_addresses {
            *self.denied_addresses.entry(*address).or_default() += n;
        }
    }
}

/// Most first, then by key, at most `n`.
fn top<K: Ord + Clone>(counts: HashMap<K, u64>, n: usize) -> Vec<(K, u64)> {
    let mut all: Vec<(K, u64)> = counts.into_iter().collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

impl Counts {
    fn totals(self) -> Totals {
        Totals {
            requests: self.requests,
            denied: self.denied,
            denials: top(self.denials, usize::MAX),
            sign_in_failures: top(self.sign_in_failures, usize::MAX),
            rate_limited: self.rate_limited,
            top_denied_users: top(self.denied_users, 10),
            top_denied_addresses: top(self.denied_addresses, 10),
        }
    }
}

#[derive(Debug, Default)]
struct Window {
    /// Oldest first; at most a day and the bucket in progress.
    buckets: VecDeque<Bucket>,
    /// Oldest first.
    recent: VecDeque<Recent>,
    /// The oldest record counted (unix seconds): the process start, or earlier once the
    /// trail before it was read back.
    since: u64,
}

/// The last day of activity (see the module documentation). Cloning shares it.
#[derive(Debug, Clone)]
pub struct Activity {
    window: Arc<Mutex<Window>>,
}

impl Activity {
    /// Empty, counting from `now` (unix seconds).
    pub fn new(now: u64) -> Activity {
        Activity {
            window: Arc::new(Mutex::new(Window {
                since: now,
                ..Window::default()
            })),
        }
    }

    /// Takes in what `older` counted from records written before this process's first one
    /// (read back from the trail): counts into their buckets, records before those kept.
    pub fn merge_older(&self, older: &Activity) {
        let older = std::mem::take(&mut *older.lock());
        let mut window = self.lock();
        for bucket in older.buckets {
            match window.buckets.iter_mut().find(|b| b.start == bucket.start) {
                Some(same) => same.counts.add(&bucket.counts),
                None => window.buckets.push_back(bucket),
            }
        }
        window.buckets.make_contiguous().sort_by_key(|b| b.start);
        if let Some(newest) = window.buckets.back().map(|b| b.start) {
            let oldest = newest.saturating_sub(DAY_BUCKETS * BUCKET_SECONDS);
            window.buckets.retain(|b| b.start >= oldest);
        }
        let mut recent = older.recent;
        recent.extend(window.recent.drain(..));
        while recent.len() > RECENT {
            recent.pop_front();
        }
        window.recent = recent;
        window.since = window.since.min(older.since);
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        // A panic while holding the lock leaves counts, never broken invariants: go on.
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts `event`, written as `seq` at `now`; keeps it when it is security-relevant.
    pub fn observe(&self, event: &AuditEvent, seq: u64, now: u64) {
        let mut window = self.lock();
        let start = now - now % BUCKET_SECONDS;
        if window.buckets.back().is_none_or(|b| b.start < start) {
            window.buckets.push_back(Bucket {
                start,
                ..Bucket::default()
            });
            let oldest = start.saturating_sub(DAY_BUCKETS * BUCKET_SECONDS);
            while window.buckets.front().is_some_and(|b| b.start < oldest) {
                window.buckets.pop_front();
            }
        }
        if let Some(bucket) = window.buckets.back_mut() {
            count(&mut bucket.counts, event);
        }
        if relevant(event) {
            if window.recent.len() >= RECENT {
                window.recent.pop_front();
            }
            window.recent.push_back(recent(event, seq, now));
        }
    }

    /// The last hour and day before `now`.
    pub fn overview(&self, now: u64) -> Overview {
        let window = self.lock();
        let hour_from = now.saturating_sub(3_600);
        let day_from = now.saturating_sub(86_400);
        let (mut hour, mut day) = (Counts::default(), Counts::default());
        let current = now - now % BUCKET_SECONDS;
        let mut hour_slices: Vec<Slice> = (0..12)
            .rev()
            .map(|i| Slice {
                start: current.saturating_sub(i * BUCKET_SECONDS),
                ..Slice::default()
            })
            .collect();
        let current_hour = now - now % 3_600;
        let mut day_slices: Vec<Slice> = (0..24)
            .rev()
            .map(|i| Slice {
                start: current_hour.saturating_sub(i * 3_600),
                ..Slice::default()
            })
            .collect();
        for bucket in &window.buckets {
            // A bucket counts in a span when it ends inside it.
            let end = bucket.start + BUCKET_SECONDS;
            if end > hour_from {
                hour.add(&bucket.counts);
            }
            if end > day_from {
                day.add(&bucket.counts);
            }
            for slices in [&mut hour_slices, &mut day_slices] {
                if let Some(slice) = slices.iter_mut().rev().find(|s| s.start <= bucket.start) {
                    slice.requests += bucket.counts.requests;
                    slice.denied += bucket.counts.denied;
                }
            }
        }
        hour_slices.retain(|s| s.start + BUCKET_SECONDS > hour_from);
        Overview {
            hour: hour.totals(),
            day: day.totals(),
            hour_slices,
            day_slices,
            since: window.since,
        }
    }

    /// The latest records that `filter` admits, newest first, at most `limit`.
    pub fn recent(&self, filter: &EventFilter, limit: usize) -> Vec<Recent> {
        let window = self.lock();
        window
            .recent
            .iter()
            .rev()
            .filter(|r| filter.admits(r))
            .take(limit)
            .cloned()
            .collect()
    }

    /// A user's data is being forgotten: their records and counts go too.
    pub fn forget(&self, user: &str) {
        let mut window = self.lock();
        window.recent.retain(|r| r.user.as_deref() != Some(user));
        for bucket in &mut window.buckets {
            bucket.counts.denied_users.remove(user);
        }
    }
}

/// Adds one record to its bucket.
fn count(bucket: &mut Counts, event: &AuditEvent) {
    match event.event {
        EventKind::Access | EventKind::AccessDenied | EventKind::AppDisabled => {
            bucket.requests += 1;
        }
        EventKind::LoginFailed => {
            let idp = event.idp.clone().unwrap_or_else(|| "-".into());
            let why = event.detail.clone().unwrap_or_else(|| "-".into());
            if bucket.sign_in_failures.len() < TOP_KEYS
                || bucket
                    .sign_in_failures
                    .contains_key(&(idp.clone(), why.clone()))
            {
                *bucket.sign_in_failures.entry((idp, why)).or_default() += 1;
            }
            return;
        }
        _ => return,
    }
    if event.decision != Some(Outcome::Deny) {
        return;
    }
    bucket.denied += 1;
    if let Some(reason) = event.reason {
        *bucket.denials.entry(reason.as_str()).or_default() += 1;
        if reason == crate::policy::Reason::RateLimited {
            bucket.rate_limited += 1;
        }
    }
    if let Some(user) = &event.user {
        bump(&mut bucket.denied_users, user.as_str(), |u: &str| {
            u.to_string()
        });
    }
    if let Some(address) = event.client_ip {
        bump(&mut bucket.denied_addresses, &address, |a| *a);
    }
}

/// Counts `key`, unless the map is full and it is new.
fn bump<K, Q>(map: &mut HashMap<K, u64>, key: &Q, owned: impl FnOnce(&Q) -> K)
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < TOP_KEYS {
        map.insert(owned(key), 1);
    }
}

/// Everything but forwarded requests and routine sign-in steps.
fn relevant(event: &AuditEvent) -> bool {
    !matches!(
        event.event,
        EventKind::Access
            | EventKind::LoginStarted
            | EventKind::LoginSucceeded
            | EventKind::RefreshSucceeded
    )
}

fn recent(event: &AuditEvent, seq: u64, now: u64) -> Recent {
    Recent {
        seq,
        at: now,
        event: event.event.as_str(),
        reason: event.reason.map(crate::policy::Reason::as_str),
        // Whom a user-forgotten record is about is exactly what must not be kept.
        user: (event.event != EventKind::UserForgotten)
            .then(|| event.user.clone())
            .flatten(),
        entity: event.entity.clone(),
        app: event.app.as_deref().map(str::to_string),
        idp: event.idp.clone(),
        client_ip: event.client_ip,
        request: match (&event.method, &event.path) {
            (Some(m), Some(p)) => Some(format!("{m} {p}")),
            (None, Some(p)) => Some(p.clone()),
            _ => None,
        },
        status: event.status,
        operator: event.operator.clone(),
        detail: event.detail.clone(),
    }
}

#[cfg(test)]
mod tests;
