//! A proxy's config as typed, keyed, versioned resources: what the discovery stream carries
//! (shared/ARCHITECTURE.md, "What travels between the planes").
//!
//! - The control plane renders each resource once ([`Rendered`]: key, content version, JSON
//!   body) and sends a proxy only those whose version differs from what it last ACKed.
//! - The proxy keeps what it holds ([`Held`]), applies a push to a copy ([`assemble`]), builds a
//!   whole [`ProxyConfig`] from it and validates that; any problem refuses the push as a whole.
//! - Both sides name a whole state by [`state_version`], a hash over every held key and version,
//!   so `weft status` can tell a proxy that runs exactly what it was sent.
//!
//! `weft proxy --config FILE` still reads a [`ProxyConfig`]: the resources are its parts, cut
//! along the lines [`resources_of`] draws.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use crate::proto::ResourceType;
use crate::proto::{DiscoveryResponse, Resource, ResourceKey};
use crate::proxy_config::{
    AuthzPolicy, EndpointSet, InboundListener, JwtRule, MeshService, MtlsMode, ProxyConfig, Telemetry,
    WorkloadInfo,
};

/// The name of the one [`ResourceType::Workload`] resource of a proxy.
pub const WORKLOAD_NAME: &str = "workload";
/// The name of the one [`ResourceType::Policy`] resource of a proxy (its inbound policy).
pub const INBOUND_POLICY_NAME: &str = "inbound";
/// The name of a proxy's [`ResourceType::Policy`] resource carrying its telemetry settings
/// (Istio `Telemetry`); sent only when a document decides something.
pub const TELEMETRY_POLICY_NAME: &str = "telemetry";

/// Which resource: its type and its name within that type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub kind: ResourceType,
    /// Shared (not copied) by every table that names this resource.
    pub name: Arc<str>,
}

/// The inbound policy of a workload: its mTLS mode and the authorization policies that apply to
/// it (the parts of `Inbound` that are neither listeners nor host addresses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InboundPolicy {
    #[serde(default)]
    pub mtls: MtlsMode,
    #[serde(default)]
    pub authorization: Vec<AuthzPolicy>,
    /// The JWT issuers the workload accepts (Istio `RequestAuthentication`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authentication: Vec<JwtRule>,
}

/// One resource as it goes on the wire. Rendered once; every push that carries it shares `body`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub key: Key,
    /// [`content_hash`] of `body`.
    pub version: u64,
    /// The resource as JSON.
    pub body: Bytes,
}

/// Why resources could not be rendered, or why a push was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("{key}: does not serialize: {source}")]
    Serialize {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("{0} appears twice")]
    Duplicate(String),
    #[error("a delta arrived before any full state was applied on this stream")]
    DeltaBeforeFullState,
    #[error("a full-state push names resources to remove")]
    RemovalInFullState,
    #[error("the pushed version {pushed} is not the version of the assembled resources {assembled}")]
    VersionMismatch { pushed: String, assembled: String },
    #[error("{0}")]
    InvalidConfig(String),
}

// === rendering ===

/// Every resource of `config` (the parts a control plane decides), sorted by key.
pub fn resources_of(config: &ProxyConfig) -> Result<Vec<Rendered>, ResourceError> {
    let mut out = own_resources(config)?;
    for service in &config.services {
        out.push(Rendered::new(ResourceType::MeshService, service.fqdn(), service)?);
    }
    for set in &config.endpoints {
        out.push(Rendered::new(
            ResourceType::EndpointSet,
            endpoint_set_name(set),
            set,
        )?);
    }
    sort_unique(&mut out)?;
    Ok(out)
}

/// The resources that are the proxy's own: its workload, one listener per app port, its inbound
/// policy. (Services and endpoint sets are shared: see [`service_resources`].)
pub fn own_resources(config: &ProxyConfig) -> Result<Vec<Rendered>, ResourceError> {
    let mut out = vec![Rendered::new(
        ResourceType::Workload,
        WORKLOAD_NAME,
        &config.workload,
    )?];
    for l in &config.inbound.listeners {
        out.push(Rendered::new(
            ResourceType::InboundListener,
            l.port.to_string(),
            l,
        )?);
    }
    let policy = InboundPolicy {
        mtls: config.inbound.mtls,
        authorization: config.inbound.authorization.clone(),
        authentication: config.inbound.authentication.clone(),
    };
    out.push(Rendered::new(ResourceType::Policy, INBOUND_POLICY_NAME, &policy)?);
    if !config.telemetry.is_default() {
        out.push(Rendered::new(
            ResourceType::Policy,
            TELEMETRY_POLICY_NAME,
            &config.telemetry,
        )?);
    }
    Ok(out)
}

/// A service's resources: the `MeshService` and its endpoint sets.
pub fn service_resources(
    service: &MeshService,
    endpoints: &[EndpointSet],
) -> Result<Vec<Rendered>, ResourceError> {
    let mut out = vec![Rendered::new(ResourceType::MeshService, service.fqdn(), service)?];
    for set in endpoints {
        out.push(Rendered::new(
            ResourceType::EndpointSet,
            endpoint_set_name(set),
            set,
        )?);
    }
    Ok(out)
}

/// `reviews.default.svc.cluster.local:9080`, or `...:9080/v1` for a subset.
pub fn endpoint_set_name(set: &EndpointSet) -> String {
    let fqdn = ProxyConfig::fqdn(&set.service, &set.namespace);
    match &set.subset {
        Some(subset) => format!("{fqdn}:{}/{subset}", set.port),
        None => format!("{fqdn}:{}", set.port),
    }
}

/// Sorts by key and refuses a key given twice.
pub fn sort_unique(resources: &mut [Rendered]) -> Result<(), ResourceError> {
    resources.sort_by(|a, b| a.key.cmp(&b.key));
    match resources.windows(2).find(|w| w[0].key == w[1].key) {
        Some(w) => Err(ResourceError::Duplicate(w[0].key.to_string())),
        None => Ok(()),
    }
}

impl Rendered {
    pub fn new<T: Serialize>(
        kind: ResourceType,
        name: impl Into<Arc<str>>,
        value: &T,
    ) -> Result<Self, ResourceError> {
        let key = Key {
            kind,
            name: name.into(),
        };
        let body = serde_json::to_vec(value).map_err(|source| ResourceError::Serialize {
            key: key.to_string(),
            source,
        })?;
        Ok(Self {
            version: content_hash(&body),
            body: Bytes::from(body),
            key,
        })
    }

    /// As it goes in a push (the body is shared, not copied).
    pub fn to_proto(&self) -> Resource {
        Resource {
            key: Some(self.key.to_proto()),
            version: version_string(self.version),
            body: self.body.clone(),
        }
    }
}

// === large pushes, in parts ===

/// About how many bytes of resource bodies one message carries. Each HTTP/2 stream's encoder
/// keeps a buffer as large as the largest message it sent, for as long as the stream lives: a
/// full state in one message would keep a copy of every shared resource per proxy. Parts fit the
/// encoder's initial buffer ([`crate::proto::codec::ENCODE_BUFFER`]), so it never grows.
pub const PART_BYTES: usize = 4 * 1024;

/// Splits a push into parts of about `max_bytes` of bodies each (a larger resource travels
/// alone), all with its nonce and version; every part but the last says `more`. The removals
/// ride on the last part. Lazily: a part exists only from when it is taken until it is sent, so
/// the many proxies receiving a full state at once do not each hold all of theirs.
pub fn split(push: DiscoveryResponse, max_bytes: usize) -> Parts {
    let DiscoveryResponse {
        version,
        nonce,
        resources,
        removed,
        full_state,
        more: _,
    } = push;
    Parts {
        version,
        nonce,
        full_state,
        resources: resources.into_iter().peekable(),
        removed: Some(removed),
        max_bytes,
    }
}

/// The parts of one push, in order (see [`split`]).
#[derive(Debug)]
pub struct Parts {
    version: String,
    nonce: String,
    full_state: bool,
    resources: std::iter::Peekable<std::vec::IntoIter<Resource>>,
    /// Taken by the last part.
    removed: Option<Vec<ResourceKey>>,
    max_bytes: usize,
}

impl Iterator for Parts {
    type Item = DiscoveryResponse;

    fn next(&mut self) -> Option<DiscoveryResponse> {
        // Gone once the last part is out.
        self.removed.as_ref()?;
        let mut resources = Vec::new();
        let mut bytes = 0;
        while let Some(r) = self
            .resources
            .next_if(|r| resources.is_empty() || bytes + r.body.len() <= self.max_bytes)
        {
            bytes += r.body.len();
            resources.push(r);
        }
        let last = self.resources.peek().is_none();
        Some(DiscoveryResponse {
            version: self.version.clone(),
            nonce: self.nonce.clone(),
            resources,
            removed: if last {
                self.removed.take().unwrap_or_default()
            } else {
                Vec::new()
            },
            full_state: self.full_state,
            more: !last,
        })
    }
}

/// Collects the parts of one push (see [`split`]).
#[derive(Debug, Default)]
pub struct Reassembly {
    pending: Option<DiscoveryResponse>,
}

impl Reassembly {
    /// The whole push once `part` is its last; None while more parts are due. A part of another
    /// push than the one pending starts over (a sender never interleaves pushes on a stream).
    pub fn add(&mut self, part: DiscoveryResponse) -> Option<DiscoveryResponse> {
        let whole = match self.pending.take() {
            Some(mut pending) if pending.nonce == part.nonce => {
                pending.resources.extend(part.resources);
                pending.removed.extend(part.removed);
                pending.more = part.more;
                pending
            }
            _ => part,
        };
        if whole.more {
            self.pending = Some(whole);
            return None;
        }
        Some(whole)
    }
}

// === versions ===

/// A stable content hash (FNV-1a, 64 bits): the same bytes give the same value in every process
/// and release.
pub fn content_hash(bytes: &[u8]) -> u64 {
    fnv(FNV_OFFSET, bytes)
}

/// A version as it travels: 16 hex digits.
pub fn version_string(v: u64) -> String {
    format!("{v:016x}")
}

/// The version of a whole state: a hash over every `(key, version)`, given in key order.
/// Equal versions, equal resources; the control plane and the proxy compute it alike.
pub fn state_version<'a>(resources: impl IntoIterator<Item = (&'a Key, u64)>) -> String {
    let mut h = FNV_OFFSET;
    for (key, version) in resources {
        h = fnv(h, &(key.kind as i32).to_le_bytes());
        h = fnv(h, key.name.as_bytes());
        // A separator no name contains: ("ab", "c") and ("a", "bc") hash apart.
        h = fnv(h, &[0]);
        h = fnv(h, &version.to_le_bytes());
    }
    version_string(h)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

// === the proxy's side ===

/// The resources a proxy holds, parsed, with their versions. Cheap to clone: values are shared.
#[derive(Debug, Clone, Default)]
pub struct Held {
    resources: BTreeMap<Key, HeldResource>,
}

#[derive(Debug, Clone)]
struct HeldResource {
    version: u64,
    value: Arc<Value>,
}

#[derive(Debug)]
enum Value {
    Workload(WorkloadInfo),
    Listener(InboundListener),
    Policy(InboundPolicy),
    Telemetry(Telemetry),
    Service(MeshService),
    Endpoints(EndpointSet),
}

/// Applies `push` to what is held (`None`: nothing yet on this stream) and builds the config it
/// describes: every resource parsed and checked against its key and version, the state version
/// checked against the push's, the whole config validated. On any error nothing is returned, so
/// the caller keeps what it had.
pub fn assemble(held: Option<&Held>, push: &DiscoveryResponse) -> Result<(Held, ProxyConfig), ResourceError> {
    let mut next = match (push.full_state, held) {
        (true, _) => Held::default(),
        (false, Some(held)) => held.clone(),
        (false, None) => return Err(ResourceError::DeltaBeforeFullState),
    };
    if push.full_state && !push.removed.is_empty() {
        return Err(ResourceError::RemovalInFullState);
    }
    let mut touched = std::collections::HashSet::new();
    for key in &push.removed {
        let key = Key::from_proto(Some(key))?;
        if !touched.insert(key.clone()) {
            return Err(ResourceError::Duplicate(key.to_string()));
        }
        next.resources.remove(&key);
    }
    for resource in &push.resources {
        let (key, held) = HeldResource::parse(resource)?;
        if !touched.insert(key.clone()) {
            return Err(ResourceError::Duplicate(key.to_string()));
        }
        next.resources.insert(key, held);
    }
    let assembled = next.version();
    if assembled != push.version {
        return Err(ResourceError::VersionMismatch {
            pushed: push.version.clone(),
            assembled,
        });
    }
    let config = next.config();
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(ResourceError::InvalidConfig(
            problems
                .iter()
                .map(|p| match &p.field {
                    Some(f) => format!("{f}: {}", p.message),
                    None => p.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    Ok((next, config))
}

impl Held {
    /// The version of everything held (see [`state_version`]).
    pub fn version(&self) -> String {
        state_version(self.resources.iter().map(|(k, r)| (k, r.version)))
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The config the held resources make, in the order a compiled config has: listeners by
    /// port, services by name, endpoint sets by service, port, then subset (the whole service
    /// first). What no resource carries (admin, limits, host addresses) is left at its default.
    pub fn config(&self) -> ProxyConfig {
        let mut c = ProxyConfig::default();
        for r in self.resources.values() {
            match &*r.value {
                Value::Workload(w) => c.workload = w.clone(),
                Value::Listener(l) => c.inbound.listeners.push(l.clone()),
                Value::Policy(p) => {
                    c.inbound.mtls = p.mtls;
                    c.inbound.authorization = p.authorization.clone();
                    c.inbound.authentication = p.authentication.clone();
                }
                Value::Telemetry(t) => c.telemetry = t.clone(),
                Value::Service(s) => c.services.push(s.clone()),
                Value::Endpoints(e) => c.endpoints.push(e.clone()),
            }
        }
        c.inbound.listeners.sort_by_key(|l| l.port);
        c.services.sort_by_cached_key(MeshService::fqdn);
        c.endpoints.sort_by_cached_key(|e| {
            (
                ProxyConfig::fqdn(&e.service, &e.namespace),
                e.port,
                e.subset.clone(),
            )
        });
        c
    }
}

impl HeldResource {
    /// One pushed resource, parsed as its type, its body matching its version and its name
    /// matching what the body is.
    fn parse(resource: &Resource) -> Result<(Key, HeldResource), ResourceError> {
        let key = Key::from_proto(resource.key.as_ref())?;
        let invalid = |message: String| ResourceError::Invalid {
            key: key.to_string(),
            message,
        };
        let version = u64::from_str_radix(&resource.version, 16)
            .ok()
            .filter(|_| resource.version.len() == 16)
            .ok_or_else(|| invalid(format!("version {:?} is not 16 hex digits", resource.version)))?;
        if content_hash(&resource.body) != version {
            return Err(invalid(format!(
                "the body does not hash to its version {}",
                resource.version
            )));
        }
        fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
            serde_json::from_slice(bytes).map_err(|e| e.to_string())
        }
        let (value, name) = match key.kind {
            ResourceType::Workload => (
                Value::Workload(body(&resource.body).map_err(invalid)?),
                WORKLOAD_NAME.to_string(),
            ),
            ResourceType::InboundListener => {
                let l: InboundListener = body(&resource.body).map_err(invalid)?;
                let name = l.port.to_string();
                (Value::Listener(l), name)
            }
            ResourceType::Policy if *key.name == *TELEMETRY_POLICY_NAME => (
                Value::Telemetry(body(&resource.body).map_err(invalid)?),
                TELEMETRY_POLICY_NAME.to_string(),
            ),
            ResourceType::Policy => (
                Value::Policy(body(&resource.body).map_err(invalid)?),
                INBOUND_POLICY_NAME.to_string(),
            ),
            ResourceType::MeshService => {
                let s: MeshService = body(&resource.body).map_err(invalid)?;
                let name = s.fqdn();
                (Value::Service(s), name)
            }
            ResourceType::EndpointSet => {
                let e: EndpointSet = body(&resource.body).map_err(invalid)?;
                let name = endpoint_set_name(&e);
                (Value::Endpoints(e), name)
            }
            ResourceType::Unspecified => return Err(invalid("no resource type".into())),
        };
        if *key.name != *name {
            return Err(invalid(format!("the body is {name:?}, not what the key names")));
        }
        Ok((
            key,
            HeldResource {
                version,
                value: Arc::new(value),
            },
        ))
    }
}

// === impl Key ===

impl Key {
    pub fn new(kind: ResourceType, name: &str) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }

    pub fn to_proto(&self) -> ResourceKey {
        ResourceKey {
            r#type: self.kind as i32,
            name: self.name.to_string(),
        }
    }

    fn from_proto(key: Option<&ResourceKey>) -> Result<Self, ResourceError> {
        let invalid = |message: &str| ResourceError::Invalid {
            key: format!("{key:?}"),
            message: message.into(),
        };
        let key = key.ok_or_else(|| invalid("a resource without a key"))?;
        let kind = ResourceType::try_from(key.r#type)
            .ok()
            .filter(|k| *k != ResourceType::Unspecified)
            .ok_or_else(|| invalid("unknown resource type"))?;
        if key.name.is_empty() {
            return Err(invalid("empty resource name"));
        }
        Ok(Key::new(kind, &key.name))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", type_name(self.kind), self.name)
    }
}

/// `MeshService`, `EndpointSet`...: how the types are named in logs, errors and `weft status`.
pub fn type_name(kind: ResourceType) -> &'static str {
    match kind {
        ResourceType::Unspecified => "Unspecified",
        ResourceType::Workload => "Workload",
        ResourceType::InboundListener => "InboundListener",
        ResourceType::Policy => "Policy",
        ResourceType::MeshService => "MeshService",
        ResourceType::EndpointSet => "EndpointSet",
    }
}

#[cfg(test)]
mod tests;
