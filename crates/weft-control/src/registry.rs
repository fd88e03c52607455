//! What the control plane knows beyond the documents: the virtual IP of every service and the
//! running instances (replicas) of every workload.
//!
//! - **Virtual IPs** (shared/ARCHITECTURE.md, "Addresses"): each service, by its fully qualified
//!   name, gets an address from a configurable IPv4 range (default `240.240.0.0/16`, without the
//!   network and broadcast addresses). The first choice is a hash of the name, so the same mesh
//!   gets the same VIPs on any host in any order; collisions probe linearly. The fqdn -> VIP map
//!   is persisted as JSON in the state file (written atomically: temp file, then rename), so
//!   VIPs survive restarts.
//! - **Instances**: registered by proxies when they connect. They are kept in the same state file,
//!   so a restarted control plane serves the endpoints it knew at once instead of empty sets:
//!   without them, the first proxies to reconnect were pushed services with no endpoints and
//!   answered 503 `UH` until every other proxy was back. An instance read from the file is
//!   *restored*: it serves until its proxy reconnects (then it is live again) or until the
//!   control plane's endpoint grace period passes without it (`expire_restored`), as if its proxy
//!   had disconnected at the restart. A restored id still belongs to its workload (admission).
//!   Instance changes are written at most once a second (`save`) and without fsync: a killed
//!   process loses nothing (the page cache has it), a crash of the host loses at most the last
//!   changes, which reconnecting proxies rebuild; VIP changes are written at once and synced.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The default virtual IP range: unroutable, as Istio's auto-allocation uses.
pub const DEFAULT_VIP_RANGE: &str = "240.240.0.0/16";

/// Everything the registry can fail at: reading or writing its state file.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry state {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "virtual IP range {0:?}: want an IPv4 CIDR with a prefix of /30 or shorter, e.g. 240.240.0.0/16"
    )]
    BadRange(String),
}

/// An IPv4 CIDR that virtual IPs are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipRange {
    network: u32,
    prefix: u8,
}

impl VipRange {
    /// The range `network/prefix`; host bits of `network` are cleared. None when the range
    /// holds fewer than two usable addresses (prefix longer than /30).
    pub fn new(network: Ipv4Addr, prefix: u8) -> Option<Self> {
        if prefix > 30 {
            return None;
        }
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Some(Self {
            network: u32::from(network) & mask,
            prefix,
        })
    }

    /// How many addresses can be handed out (the network and broadcast addresses cannot).
    pub fn usable(&self) -> u32 {
        // prefix <= 30, so the size is at least 4 and fits in u64.
        ((1u64 << (32 - self.prefix)) - 2) as u32
    }

    /// The `i`th usable address (0-based), i.e. network + 1 + i.
    fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.network.wrapping_add(1).wrapping_add(i % self.usable()))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        u32::from(ip) & mask == self.network
    }
}

impl Default for VipRange {
    fn default() -> Self {
        Self {
            network: u32::from(Ipv4Addr::new(240, 240, 0, 0)),
            prefix: 16,
        }
    }
}

impl FromStr for VipRange {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RegistryError::BadRange(s.to_string());
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.trim().parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.trim().parse().map_err(|_| bad())?;
        Self::new(ip, prefix).ok_or_else(bad)
    }
}

impl fmt::Display for VipRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

/// One running replica of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Unique, e.g. `reviews-v1-0`.
    pub id: String,
    /// The workload's name.
    pub workload: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub ip: IpAddr,
    /// Declared port (the workload's port, a service's target port) -> the port the app really
    /// listens on. They differ in the no-root mode, where every replica shares 127.0.0.1.
    pub app_ports: BTreeMap<u16, u16>,
    /// The mesh port of the instance's proxy; None without a sidecar.
    pub mesh_port: Option<u16>,
}

/// What the state file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    /// fqdn -> VIP, every VIP ever given (released ones included).
    #[serde(default)]
    vips: BTreeMap<String, Ipv4Addr>,
    /// Names whose service is gone; their VIPs stay reserved for them (see `release_missing`).
    #[serde(default)]
    released: BTreeSet<String>,
    /// id -> instance, every instance registered when the file was written.
    #[serde(default)]
    instances: BTreeMap<String, Instance>,
}

/// How often instance changes alone are written to the state file.
const INSTANCES_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Services' virtual IPs and workloads' instances.
#[derive(Debug, Default)]
pub struct Registry {
    range: VipRange,
    state_file: Option<PathBuf>,
    state: State,
    /// VIP -> fqdn, the reverse of `state.vips`.
    taken: BTreeMap<Ipv4Addr, String>,
    /// The VIP map changed since the last load or save.
    dirty: bool,
    /// The instances changed since the last save.
    instances_dirty: bool,
    /// When the file was last written.
    written_at: Option<Instant>,
    /// Instances read from the state file whose proxy has not connected since.
    restored: BTreeSet<String>,
    /// The trust domain of the identities endpoints must present.
    trust_domain: String,
}

impl Registry {
    /// Sets the trust domain of endpoint identities (default `cluster.local`).
    pub fn set_trust_domain(&mut self, trust_domain: &str) {
        self.trust_domain = trust_domain.to_string();
    }

    /// The SPIFFE ID an instance presents.
    pub fn identity_of(&self, instance: &Instance) -> String {
        let sa = if instance.service_account.is_empty() {
            "default"
        } else {
            &instance.service_account
        };
        format!("spiffe://{}/ns/{}/sa/{sa}", self.trust_domain, instance.namespace)
    }

    /// A registry whose VIPs are kept in `state_file` (read now if it exists; None keeps them
    /// in memory only), with the default range.
    pub fn load(state_file: Option<&Path>) -> Result<Self, RegistryError> {
        Self::load_with_range(state_file, VipRange::default())
    }

    /// As `load`, with VIPs for new services taken from `range`. VIPs already given keep their
    /// address even if it lies outside `range` (stability first).
    pub fn load_with_range(state_file: Option<&Path>, range: VipRange) -> Result<Self, RegistryError> {
        let mut state = State::default();
        if let Some(path) = state_file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    state = serde_json::from_slice(&bytes).map_err(|source| RegistryError::Json {
                        path: path.to_path_buf(),
                        source,
                    })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(RegistryError::Io {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
        // Two names claiming one VIP (a hand-edited file) keep it for the first name only; the
        // second is given a new one when asked.
        let mut taken = BTreeMap::new();
        let mut dirty = false;
        state.vips.retain(|fqdn, ip| {
            if taken.contains_key(ip) {
                dirty = true;
                false
            } else {
                taken.insert(*ip, fqdn.clone());
                true
            }
        });
        let vips = &state.vips;
        state.released.retain(|f| vips.contains_key(f));
        // An entry whose key is not its id (a hand-edited file) is dropped, not trusted.
        state.instances.retain(|id, i| *id == i.id);
        let restored = state.instances.keys().cloned().collect();
        Ok(Self {
            range,
            state_file: state_file.map(Path::to_path_buf),
            state,
            taken,
            dirty,
            instances_dirty: false,
            written_at: None,
            restored,
            trust_domain: weft_api::identity::DEFAULT_TRUST_DOMAIN.to_string(),
        })
    }

    /// Writes the state file if it changed (temp file in the same directory, then rename, so a
    /// crash leaves the old file or the new one, never half of one): at once, synced, when VIPs
    /// changed; when only instances changed, at most once per second and not synced (see the
    /// module comment), so a connect storm of thousands of proxies is not thousands of writes.
    /// Call it again later (the control plane does, every second) to write what was held back.
    /// Without a state file, does nothing.
    pub fn save(&mut self) -> Result<(), RegistryError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let sync = self.dirty || !path.exists();
        let instances_due = self.instances_dirty
            && self
                .written_at
                .is_none_or(|t| t.elapsed() >= INSTANCES_WRITE_INTERVAL);
        if !sync && !instances_due {
            return Ok(());
        }
        let io = |source| RegistryError::Io {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(&self.state).map_err(|source| RegistryError::Json {
            path: path.clone(),
            source,
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            if sync {
                f.sync_all()?;
            }
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        self.dirty = false;
        self.instances_dirty = false;
        self.written_at = Some(Instant::now());
        Ok(())
    }

    /// The range new VIPs come from.
    pub fn range(&self) -> VipRange {
        self.range
    }

    /// The VIP of service `fqdn`, allocated now if it has none. A released name gets its old
    /// VIP back.
    pub fn vip_for(&mut self, fqdn: &str) -> Ipv4Addr {
        if let Some(ip) = self.state.vips.get(fqdn) {
            let ip = *ip;
            if self.state.released.remove(fqdn) {
                self.dirty = true;
            }
            return ip;
        }
        let ip = self.allocate(fqdn);
        self.state.vips.insert(fqdn.to_string(), ip);
        self.taken.insert(ip, fqdn.to_string());
        self.dirty = true;
        ip
    }

    /// The VIP of `fqdn` if it has one (released or not); never allocates.
    pub fn vip(&self, fqdn: &str) -> Option<Ipv4Addr> {
        self.state.vips.get(fqdn).copied()
    }

    /// Marks the VIPs of services not in `live` as released. A released VIP stays reserved for
    /// its name (VIPs are cheap: a /16 holds 65,534), so a service deleted and created again
    /// gets the same address and no other service inherits one that clients may have cached.
    /// Only when the range is full is a released VIP given to a new name. Returns the names
    /// released by this call, sorted.
    pub fn release_missing(&mut self, live: &HashSet<String>) -> Vec<String> {
        let mut newly = Vec::new();
        for fqdn in self.state.vips.keys() {
            if !live.contains(fqdn) && !self.state.released.contains(fqdn) {
                newly.push(fqdn.clone());
            }
        }
        if !newly.is_empty() {
            self.state.released.extend(newly.iter().cloned());
            self.dirty = true;
        }
        newly
    }

    /// First choice: a hash of the name (FNV-1a, stable across builds and hosts); then the
    /// next free address; when the range is full, the first released VIP.
    fn allocate(&mut self, fqdn: &str) -> Ipv4Addr {
        let usable = self.range.usable();
        let start = fnv1a(fqdn.as_bytes()) % usable;
        for i in 0..usable {
            let ip = self.range.nth(start.wrapping_add(i));
            if !self.taken.contains_key(&ip) {
                return ip;
            }
        }
        // Full: reuse a released VIP (the first in name order, for determinism).
        if let Some(old) = self.state.released.pop_first() {
            if let Some(ip) = self.state.vips.remove(&old) {
                self.taken.remove(&ip);
                return ip;
            }
        }
        // Full of live services: share the hash's address rather than fail. The DNS answer
        // and the per-service ports still tell services apart; `analyze` should warn.
        self.range.nth(start)
    }

    // === instances ===

    /// Adds or replaces an instance (by id): its proxy connected, so it is live (no longer
    /// restored). Returns whether anything changed.
    pub fn upsert(&mut self, instance: Instance) -> bool {
        self.restored.remove(&instance.id);
        match self.state.instances.get(&instance.id) {
            Some(old) if *old == instance => false,
            _ => {
                self.state.instances.insert(instance.id.clone(), instance);
                self.instances_dirty = true;
                true
            }
        }
    }

    /// Removes an instance; returns it if it was there.
    pub fn remove(&mut self, id: &str) -> Option<Instance> {
        self.restored.remove(id);
        let removed = self.state.instances.remove(id);
        self.instances_dirty |= removed.is_some();
        removed
    }

    /// Removes every instance still restored (read from the state file, its proxy not
    /// reconnected since): called once the endpoint grace period after a start has passed.
    /// Returns their ids.
    pub fn expire_restored(&mut self) -> Vec<String> {
        let ids: Vec<String> = std::mem::take(&mut self.restored).into_iter().collect();
        for id in &ids {
            self.state.instances.remove(id);
        }
        self.instances_dirty |= !ids.is_empty();
        ids
    }

    /// Whether `id` was read from the state file and its proxy has not reconnected since.
    pub fn is_restored(&self, id: &str) -> bool {
        self.restored.contains(id)
    }

    /// One instance by id.
    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.state.instances.get(id)
    }

    /// Every instance, in id order.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> + '_ {
        self.state.instances.values()
    }
}

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_parses_and_skips_network_and_broadcast() {
        let r: VipRange = "10.1.2.3/30".parse().expect("range");
        assert_eq!(r.to_string(), "10.1.2.0/30");
        assert_eq!(r.usable(), 2);
        assert_eq!(r.nth(0), Ipv4Addr::new(10, 1, 2, 1));
        assert_eq!(r.nth(1), Ipv4Addr::new(10, 1, 2, 2));
        assert_eq!(r.nth(2), Ipv4Addr::new(10, 1, 2, 1));
        for bad in ["10.0.0.0/31", "10.0.0.0", "x/8", "10.0.0.0/x", "::1/64"] {
            assert!(bad.parse::<VipRange>().is_err(), "{bad}");
        }
        assert_eq!(VipRange::default().to_string(), DEFAULT_VIP_RANGE);
    }

    #[test]
    fn vips_are_stable_unique_and_in_range() {
        let mut a = Registry::load(None).expect("registry");
        let mut b = Registry::load(None).expect("registry");
        let names: Vec<String> = (0..50)
            .map(|i| format!("svc{i}.default.svc.cluster.local"))
            .collect();
        let va: Vec<_> = names.iter().map(|n| a.vip_for(n)).collect();
        // Another order gives the same addresses as long as no two names hash to one address
        // (true of these; with collisions, the first allocated keeps the hashed address).
        let vb: Vec<_> = names.iter().rev().map(|n| b.vip_for(n)).collect();
        assert_eq!(va, vb.into_iter().rev().collect::<Vec<_>>());
        let unique: HashSet<_> = va.iter().collect();
        assert_eq!(unique.len(), names.len());
        let range = VipRange::default();
        for ip in &va {
            assert!(range.contains(*ip));
            assert_ne!(ip.octets()[2..], [0, 0]);
            assert_ne!(ip.octets()[2..], [255, 255]);
        }
        assert_eq!(a.vip_for(&names[7]), va[7]);
    }

    #[test]
    fn full_range_reuses_released_vips_only() {
        let mut r = Registry::load_with_range(None, "10.0.0.0/30".parse().expect("range")).expect("registry");
        let a = r.vip_for("a");
        let b = r.vip_for("b");
        assert_ne!(a, b);
        let live: HashSet<String> = ["b".to_string()].into();
        assert_eq!(r.release_missing(&live), vec!["a".to_string()]);
        assert_eq!(r.release_missing(&live), Vec::<String>::new());
        // "a" keeps its VIP while reserved...
        assert_eq!(r.vip("a"), Some(a));
        // ...until the range is full and a new name needs it.
        assert_eq!(r.vip_for("c"), a);
        assert_eq!(r.vip("a"), None);
        assert_eq!(r.vip_for("b"), b);
    }

    #[test]
    fn released_name_coming_back_keeps_its_vip() {
        let mut r = Registry::load(None).expect("registry");
        let a = r.vip_for("a");
        r.release_missing(&HashSet::new());
        assert_eq!(r.vip_for("a"), a);
        assert!(r.state.released.is_empty());
    }

    #[test]
    fn instances_upsert_and_remove() {
        let mut r = Registry::load(None).expect("registry");
        let i = Instance {
            id: "x-0".into(),
            workload: "x".into(),
            namespace: "default".into(),
            labels: BTreeMap::new(),
            service_account: "default".into(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            app_ports: [(80, 8080)].into(),
            mesh_port: Some(15008),
        };
        assert!(r.upsert(i.clone()));
        assert!(!r.upsert(i.clone()));
        assert_eq!(r.instances().count(), 1);
        assert_eq!(r.remove("x-0"), Some(i));
        assert_eq!(r.instances().count(), 0);
    }

    fn instance(id: &str) -> Instance {
        Instance {
            id: id.into(),
            workload: "x".into(),
            namespace: "default".into(),
            labels: BTreeMap::new(),
            service_account: "default".into(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            app_ports: [(80, 8080)].into(),
            mesh_port: Some(15008),
        }
    }

    #[test]
    fn instances_survive_a_restart_as_restored_until_their_proxy_reconnects_or_they_expire() {
        let dir = std::env::temp_dir().join(format!("weft-registry-restore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = dir.join("registry.json");
        let mut r = Registry::load(Some(&file)).expect("registry");
        r.upsert(instance("a-0"));
        r.upsert(instance("b-0"));
        r.vip_for("a.default.svc.cluster.local");
        r.save().expect("save");
        drop(r);

        let mut r = Registry::load(Some(&file)).expect("reload");
        assert_eq!(
            r.instances().count(),
            2,
            "instances are served at once after a restart"
        );
        assert!(r.is_restored("a-0") && r.is_restored("b-0"));
        // a's proxy reconnects with the same registration: live again, nothing changed.
        assert!(!r.upsert(instance("a-0")));
        assert!(!r.is_restored("a-0"));
        // b's never does: it goes when the grace period is over; a stays.
        assert_eq!(r.expire_restored(), vec!["b-0".to_string()]);
        assert_eq!(r.instances().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["a-0"]);
        assert!(r.expire_restored().is_empty(), "expiry happens once");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn instance_changes_alone_are_written_at_most_once_a_second() {
        let dir = std::env::temp_dir().join(format!("weft-registry-debounce-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = dir.join("registry.json");
        let mut r = Registry::load(Some(&file)).expect("registry");
        r.upsert(instance("a-0"));
        r.save().expect("first save writes");
        r.upsert(instance("b-0"));
        r.save().expect("held back");
        let on_disk = || Registry::load(Some(&file)).expect("read").instances().count();
        assert_eq!(on_disk(), 1, "a second write within the interval is held back");
        r.written_at = r.written_at.and_then(|t| t.checked_sub(INSTANCES_WRITE_INTERVAL));
        r.save().expect("due now");
        assert_eq!(on_disk(), 2);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
