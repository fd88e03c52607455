//! Who a subscribing proxy is, decided by the control plane (shared/ARCHITECTURE.md, "Trust from
//! the first packet"): the workload, namespace and service account its bootstrap token was minted
//! for; the labels and declared ports of that `Workload` document; the address it connects from
//! (or the one the Workload declares, for a workload on a VM). What the proxy says about itself
//! is at most a claim: a claim that contradicts what the control plane knows is refused with a
//! status that says which one, never silently believed.
//!
//! The proxy still tells what only it can know: the mesh port it bound, and for each declared app
//! port the port its app really listens on (they differ in the no-root mode, where every replica
//! shares 127.0.0.1). Both are ports on its own address; which ports are declared, and which
//! services an instance is an endpoint of, come from the documents (see `compile`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_api::model::Mesh;
use weft_api::proto::Subscribe;

use crate::registry::{Instance, Registry};
use crate::tokens::Grant;

/// Why a subscription was refused. Each maps to one gRPC status ([`AdmitError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("Subscribe.instance_id is empty")]
    NoInstanceId,
    #[error("wrong bootstrap token")]
    UnknownToken,
    #[error(
        "this bootstrap token is bound to no workload (minted before tokens named one); mint a new one with `weft token create --workload NAME`"
    )]
    Unbound,
    #[error("the bootstrap token is bound to {field} {bound:?}, but the subscription claims {claimed:?}")]
    Contradicts {
        field: &'static str,
        bound: String,
        claimed: String,
    },
    #[error(
        "the Workload document {workload} has labels {{{document}}}, but the subscription claims {{{claimed}}}; labels come from the document"
    )]
    Labels {
        workload: String,
        document: String,
        claimed: String,
    },
    #[error(
        "the Workload document {namespace}/{workload} runs as service account {document:?}, but the token was minted for {token:?}; mint a new token"
    )]
    ServiceAccount {
        namespace: String,
        workload: String,
        document: String,
        token: String,
    },
    #[error("the subscription claims address {claimed:?}, but {via} {address}")]
    Address {
        claimed: String,
        address: IpAddr,
        via: AddressSource,
    },
    #[error("the connection's peer address is unknown, and the Workload declares none")]
    NoAddress,
    #[error("instance id {id:?} belongs to workload {owner}; choose another --instance-id")]
    InstanceOwned { id: String, owner: String },
    #[error(
        "instance id {id:?} is not named after workload {workload:?}: an id is the workload's name, or starts with it and '-' or '.' (the default is {workload}.NAMESPACE; `weft up` names replicas {workload}-0, {workload}-1 …)"
    )]
    InstanceName { id: String, workload: String },
    #[error("instance id {id:?} is held by another live connection")]
    InstanceLive { id: String },
}

/// Where an instance's address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    /// The Workload document's `address`.
    Declared,
    /// The connection's peer address.
    Peer,
}

impl std::fmt::Display for AddressSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Declared => "its Workload document declares",
            Self::Peer => "it connects from",
        })
    }
}

// === impl AdmitError ===

impl AdmitError {
    /// The gRPC status code a proxy sees: UNAUTHENTICATED when the token is not one, else
    /// INVALID_ARGUMENT, PERMISSION_DENIED (a claim beyond what the token grants) or
    /// ALREADY_EXISTS (the instance id is in use).
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::NoInstanceId | Self::NoAddress => tonic::Code::InvalidArgument,
            Self::UnknownToken => tonic::Code::Unauthenticated,
            Self::Unbound
            | Self::Contradicts { .. }
            | Self::Labels { .. }
            | Self::ServiceAccount { .. }
            | Self::Address { .. }
            | Self::InstanceOwned { .. }
            | Self::InstanceName { .. } => tonic::Code::PermissionDenied,
            Self::InstanceLive { .. } => tonic::Code::AlreadyExists,
        }
    }
}

impl From<AdmitError> for tonic::Status {
    fn from(e: AdmitError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

/// The instance a subscription registers, or why it may not: `grant` is what its token was
/// minted for (None: no such token), `peer` the address it connects from.
pub fn admit(
    mesh: &Mesh,
    registry: &Registry,
    grant: Option<Grant>,
    sub: &Subscribe,
    peer: Option<IpAddr>,
) -> Result<Instance, AdmitError> {
    if sub.instance_id.is_empty() {
        return Err(AdmitError::NoInstanceId);
    }
    let grant = grant.ok_or(AdmitError::UnknownToken)?;
    if grant.workload.is_empty() {
        return Err(AdmitError::Unbound);
    }
    let contradicts = |field, bound: &str, claimed: &str| {
        (!claimed.is_empty() && claimed != bound).then(|| AdmitError::Contradicts {
            field,
            bound: bound.to_string(),
            claimed: claimed.to_string(),
        })
    };
    let claims = [
        contradicts("workload", &grant.workload, &sub.workload),
        contradicts("namespace", &grant.namespace, &sub.namespace),
        contradicts("service account", &grant.service_account, &sub.service_account),
    ];
    if let Some(e) = claims.into_iter().flatten().next() {
        return Err(e);
    }
    if !names_instance_of(&sub.instance_id, &grant.workload, mesh) {
        return Err(AdmitError::InstanceName {
            id: sub.instance_id.clone(),
            workload: grant.workload.clone(),
        });
    }
    // Without a document the workload has no labels: no service selects it, it is no endpoint.
    let document = mesh
        .workloads
        .iter()
        .find(|w| w.name == grant.workload && w.namespace == grant.namespace);
    let labels = document.map(|w| w.labels.clone()).unwrap_or_default();
    if let Some(w) = document {
        if w.service_account != grant.service_account {
            return Err(AdmitError::ServiceAccount {
                namespace: w.namespace.clone(),
                workload: w.name.clone(),
                document: w.service_account.clone(),
                token: grant.service_account.clone(),
            });
        }
    }
    let claimed: BTreeMap<String, String> = sub.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if !claimed.is_empty() && claimed != labels {
        let show = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        return Err(AdmitError::Labels {
            workload: format!("{}/{}", grant.namespace, grant.workload),
            document: show(&labels),
            claimed: show(&claimed),
        });
    }
    let ip = address(sub, peer, document.and_then(|w| w.address))?;
    if let Some(owner) = registry.instance(&sub.instance_id) {
        if owner.workload != grant.workload || owner.namespace != grant.namespace {
            return Err(AdmitError::InstanceOwned {
                id: sub.instance_id.clone(),
                owner: format!("{}/{}", owner.namespace, owner.workload),
            });
        }
    }
    Ok(Instance {
        id: sub.instance_id.clone(),
        workload: grant.workload,
        namespace: grant.namespace,
        labels,
        service_account: grant.service_account,
        ip,
        app_ports: sub
            .app_ports
            .iter()
            .filter_map(|(k, v)| Some((u16::try_from(*k).ok()?, u16::try_from(*v).ok()?)))
            .collect(),
        mesh_port: u16::try_from(sub.mesh_port).ok().filter(|p| *p != 0),
    })
}

/// The address the Workload document declares, else the connection's peer address; a claimed
/// address must be that one.
fn address(sub: &Subscribe, peer: Option<IpAddr>, declared: Option<IpAddr>) -> Result<IpAddr, AdmitError> {
    let (address, via) = match (declared, peer) {
        (Some(d), _) => (d.to_canonical(), AddressSource::Declared),
        (None, Some(p)) => (p.to_canonical(), AddressSource::Peer),
        (None, None) => return Err(AdmitError::NoAddress),
    };
    if sub.ip.is_empty() {
        return Ok(address);
    }
    match sub.ip.parse::<IpAddr>() {
        Ok(claimed) if claimed.to_canonical() == address => Ok(address),
        _ => Err(AdmitError::Address {
            claimed: sub.ip.clone(),
            address,
            via,
        }),
    }
}

#[cfg(test)]
mod tests;

/// Whether instance id `id` is named after `workload`: the workload's name itself, or the name
/// followed by '-' or '.' and more (`reviews-v1-0`, `reviews-v1.default`). Of the workloads whose
/// names prefix the id that way, the longest owns it, so the token of workload `reviews` cannot
/// take `reviews-v1-0` from workload `reviews-v1`. Without the rule a token for any workload could
/// register the id of another's replica before that replica started (the id is then held, and
/// the real replica refused: `InstanceOwned`), and keep it across control-plane restarts.
fn names_instance_of(id: &str, workload: &str, mesh: &Mesh) -> bool {
    let named_after = |name: &str| {
        id.strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '.']))
    };
    named_after(workload)
        && !mesh
            .workloads
            .iter()
            .any(|w| w.name.len() > workload.len() && named_after(&w.name))
}
