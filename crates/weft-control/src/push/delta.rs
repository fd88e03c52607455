//! What one stream's proxy holds, as far as the control plane knows, and the push that brings
//! it to a target state: only the resources whose version differs, and the keys of those gone.
//!
//! - Nothing ACKed on this stream yet (a new stream, a reconnect, or every push so far NACKed):
//!   the push is the full state, and the proxy drops whatever else it held.
//! - One push in flight at a time: a change while a push is unanswered is remembered and sent
//!   once the answer arrives, diffed against what the proxy then holds. So a NACK needs no undo:
//!   the next push diffs against the last ACKed state.
//! - Per proxy only keys (their names shared with the rendered resources) and versions are kept,
//!   never bodies, in a sorted slice of exactly their size (a map's nodes cost ~3× as much, per
//!   proxy, for as long as it is connected).

use std::sync::Arc;

use weft_api::discovery::{state_version, Key, Rendered};
use weft_api::proto::DiscoveryResponse;

/// A push about to go out: the message, and what it carries for `weft status`.
#[derive(Debug)]
pub struct Push {
    pub response: DiscoveryResponse,
    pub summary: PushSummary,
}

/// What one push carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushSummary {
    pub full_state: bool,
    /// The keys sent, as `Type/name` (only for a delta of at most [`LISTED`] resources: a full
    /// state lists nothing, so per proxy no copy of every name is kept).
    pub resources: Vec<String>,
    /// How many resources were sent, and how many removed.
    pub sent: usize,
    pub removed: usize,
    /// Bytes of resource bodies sent.
    pub body_bytes: usize,
}

/// How many keys a [`PushSummary`] lists.
pub const LISTED: usize = 16;

/// The state of one proxy on one stream.
#[derive(Debug, Default)]
pub struct Tracker {
    /// What the proxy ACKed last on this stream; None until it ACKs a first push.
    acked: Option<Held>,
    in_flight: Option<InFlight>,
    /// A change arrived while a push was in flight.
    behind: bool,
}

#[derive(Debug)]
struct InFlight {
    nonce: String,
    state: Held,
}

/// Keys and versions of a state, sorted by key (as every target is).
#[derive(Debug)]
struct Held(Box<[(Key, u64)]>);

impl Held {
    fn of(target: &[Arc<Rendered>]) -> Self {
        Self(target.iter().map(|r| (r.key.clone(), r.version)).collect())
    }

    fn get(&self, key: &Key) -> Option<u64> {
        let i = self.0.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(self.0[i].1)
    }

    fn keys(&self) -> impl Iterator<Item = &Key> {
        self.0.iter().map(|(k, _)| k)
    }

    fn version(&self) -> String {
        state_version(self.0.iter().map(|(k, v)| (k, *v)))
    }
}

/// What an answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Not the push in flight (an older one, or none): ignored.
    Stale,
    Acked,
    Nacked,
}

impl Tracker {
    /// The push that brings the proxy to `target` (sorted by key, unique), or None when one is in
    /// flight (sent after its answer) or the proxy already holds exactly `target`.
    pub fn push(&mut self, target: &[Arc<Rendered>], nonce: impl FnOnce() -> String) -> Option<Push> {
        if self.in_flight.is_some() {
            self.behind = true;
            return None;
        }
        self.behind = false;
        let full_state = self.acked.is_none();
        let acked = self.acked.as_ref();
        let changed: Vec<&Arc<Rendered>> = target
            .iter()
            .filter(|r| acked.and_then(|a| a.get(&r.key)) != Some(r.version))
            .collect();
        let removed: Vec<&Key> = match acked {
            Some(acked) => acked
                .keys()
                .filter(|k| target.binary_search_by(|r| r.key.cmp(k)).is_err())
                .collect(),
            None => Vec::new(),
        };
        if !full_state && changed.is_empty() && removed.is_empty() {
            return None;
        }
        let nonce = nonce();
        let summary = PushSummary {
            full_state,
            resources: match (full_state, changed.len() <= LISTED) {
                (false, true) => changed.iter().map(|r| r.key.to_string()).collect(),
                _ => Vec::new(),
            },
            sent: changed.len(),
            removed: removed.len(),
            body_bytes: changed.iter().map(|r| r.body.len()).sum(),
        };
        let response = DiscoveryResponse {
            version: state_version(target.iter().map(|r| (&r.key, r.version))),
            nonce: nonce.clone(),
            resources: changed.iter().map(|r| r.to_proto()).collect(),
            removed: removed.iter().map(|k| k.to_proto()).collect(),
            full_state,
            more: false,
        };
        self.in_flight = Some(InFlight {
            nonce,
            state: Held::of(target),
        });
        Some(Push { response, summary })
    }

    /// Records the proxy's answer to the push named `nonce`.
    pub fn answer(&mut self, nonce: &str, ok: bool) -> Answer {
        if self.in_flight.as_ref().is_none_or(|f| f.nonce != nonce) {
            return Answer::Stale;
        }
        let Some(flight) = self.in_flight.take() else {
            return Answer::Stale;
        };
        if ok {
            self.acked = Some(flight.state);
            Answer::Acked
        } else {
            Answer::Nacked
        }
    }

    /// Whether a change arrived while the last push was in flight (push again now).
    pub fn behind(&self) -> bool {
        self.behind && self.in_flight.is_none()
    }

    /// Whether a push is unanswered.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The version of what the proxy ACKed on this stream.
    pub fn acked_version(&self) -> Option<String> {
        self.acked.as_ref().map(Held::version)
    }
}

#[cfg(test)]
mod tests {
    use weft_api::discovery::ResourceType;

    use super::*;

    fn service(name: &str, body: &str) -> Arc<Rendered> {
        Arc::new(Rendered::new(ResourceType::MeshService, name, &body).expect("render"))
    }

    fn state(resources: &[(&str, &str)]) -> Vec<Arc<Rendered>> {
        let mut v: Vec<Arc<Rendered>> = resources.iter().map(|(n, b)| service(n, b)).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    fn names(p: &Push) -> (Vec<String>, Vec<String>) {
        (
            p.response
                .resources
                .iter()
                .map(|r| r.key.as_ref().expect("key").name.clone())
                .collect(),
            p.response.removed.iter().map(|k| k.name.clone()).collect(),
        )
    }

    fn nonces() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            n.to_string()
        }
    }

    #[test]
    fn the_first_push_is_the_full_state_then_only_what_changed_or_went() {
        let mut t = Tracker::default();
        let mut nonce = nonces();
        let first = t
            .push(&state(&[("a", "1"), ("b", "1"), ("c", "1")]), &mut nonce)
            .expect("push");
        assert!(first.response.full_state);
        assert_eq!(names(&first).0, ["a", "b", "c"]);
        assert_eq!(t.answer("1", true), Answer::Acked);

        // b changed, c went, d is new.
        let target = state(&[("a", "1"), ("b", "2"), ("d", "1")]);
        let delta = t.push(&target, &mut nonce).expect("push");
        assert!(!delta.response.full_state);
        assert_eq!(names(&delta), (vec!["b".into(), "d".into()], vec!["c".into()]));
        assert_eq!(delta.summary.resources, ["MeshService/b", "MeshService/d"]);
        assert_eq!(
            delta.response.version,
            state_version(target.iter().map(|r| (&r.key, r.version)))
        );
        assert_eq!(t.answer("2", true), Answer::Acked);
        assert_eq!(t.acked_version(), Some(delta.response.version));

        // Nothing differs: nothing to send.
        assert!(t.push(&target, &mut nonce).is_none());
    }

    #[test]
    fn after_a_nack_the_next_push_diffs_against_what_was_acked() {
        let mut t = Tracker::default();
        let mut nonce = nonces();
        t.push(&state(&[("a", "1"), ("b", "1")]), &mut nonce)
            .expect("push");
        t.answer("1", true);
        let refused = t
            .push(&state(&[("a", "2"), ("b", "1")]), &mut nonce)
            .expect("push");
        assert_eq!(names(&refused).0, ["a"]);
        assert_eq!(t.answer("2", false), Answer::Nacked);
        // The proxy still holds a=1: a change to b alone must carry a=2 again.
        let retry = t
            .push(&state(&[("a", "2"), ("b", "2")]), &mut nonce)
            .expect("push");
        assert!(!retry.response.full_state);
        assert_eq!(names(&retry).0, ["a", "b"]);
        // Back to what was ACKed: nothing to send.
        t.answer("3", false);
        assert!(t.push(&state(&[("a", "1"), ("b", "1")]), &mut nonce).is_none());
    }

    #[test]
    fn a_change_while_a_push_is_in_flight_waits_for_its_answer() {
        let mut t = Tracker::default();
        let mut nonce = nonces();
        t.push(&state(&[("a", "1")]), &mut nonce).expect("push");
        assert!(t.push(&state(&[("a", "2")]), &mut nonce).is_none());
        assert!(t.in_flight() && !t.behind(), "still in flight");
        assert_eq!(t.answer("stale", true), Answer::Stale);
        assert_eq!(t.answer("1", true), Answer::Acked);
        assert!(t.behind() && !t.in_flight());
        let next = t.push(&state(&[("a", "2")]), &mut nonce).expect("push");
        assert_eq!(names(&next).0, ["a"]);
        assert!(!t.behind());
    }

    #[test]
    fn until_something_is_acked_every_push_is_the_full_state() {
        // A new stream (a reconnect) starts with a new tracker: full state, whatever came before.
        let mut t = Tracker::default();
        let mut nonce = nonces();
        t.push(&state(&[("a", "1"), ("b", "1")]), &mut nonce)
            .expect("push");
        t.answer("1", false);
        let again = t.push(&state(&[("a", "1")]), &mut nonce).expect("push");
        assert!(again.response.full_state);
        assert!(again.response.removed.is_empty());
        assert_eq!(names(&again).0, ["a"]);
    }
}
