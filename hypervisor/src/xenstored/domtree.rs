//! The standard xenstore nodes of a domain (xen-networking.md §4.6, libxl 4.17), as a
//! pure list the server writes on create and removes on destroy.

use crate::domain::DomainInfo;
use crate::DomId;

/// One node to create: path, value, permission list in xenstore's text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdNode {
    /// Absolute path.
    pub path: String,
    /// Value.
    pub value: String,
    /// Permissions (`["n0", "r5"]`); empty = inherit from the parent.
    pub perms: Vec<String>,
}

fn node(path: String, value: impl Into<String>, perms: &[String]) -> StdNode {
    StdNode {
        path,
        value: value.into(),
        perms: perms.to_vec(),
    }
}

/// The home of domain `domid`.
pub fn home(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

/// Nodes written when a guest domain is created, parents before children.
///
/// Read-only to the guest (`n0,rD`): the home, `vm`, `name`, `domid`, `memory/*`,
/// `cpu/*`, `control/` and `device/`. Guest-owned (`nD`): `control/shutdown` and the
/// `feature-*`/`sysrq` control nodes, `data`, `drivers`, `feature`, `attr`, `error`,
/// `device/suspend/event-channel`. `/vm/<uuid>` is `n0,rD`; `/libxl/<D>` is `n0`.
pub fn guest_nodes(info: &DomainInfo) -> Vec<StdNode> {
    let d = info.domid;
    let h = home(d);
    let ro = vec!["n0".to_string(), format!("r{d}")];
    let owned = vec![format!("n{d}")];
    let dom0 = vec!["n0".to_string()];
    let vm = format!("/vm/{}", info.uuid);
    let kib = info.memory_mib.saturating_mul(1024).to_string();
    let mut v = vec![
        node(vm.clone(), "", &ro),
        node(format!("{vm}/uuid"), info.uuid.clone(), &ro),
        node(format!("{vm}/name"), info.name.clone(), &ro),
        node(
            format!("{vm}/start_time"),
            format!("{}.{:03}", info.created_ms / 1000, info.created_ms % 1000),
            &ro,
        ),
        node(h.clone(), "", &ro),
        node(format!("{h}/vm"), vm.clone(), &ro),
        node(format!("{h}/name"), info.name.clone(), &ro),
        node(format!("{h}/domid"), d.to_string(), &ro),
        node(format!("{h}/memory"), "", &ro),
        node(format!("{h}/memory/static-max"), kib.clone(), &ro),
        node(format!("{h}/memory/target"), kib, &ro),
        node(format!("{h}/cpu"), "", &ro),
    ];
    for i in 0..info.vcpus {
        v.push(node(format!("{h}/cpu/{i}"), "", &ro));
        v.push(node(format!("{h}/cpu/{i}/availability"), "online", &ro));
    }
    v.push(node(format!("{h}/control"), "", &ro));
    for key in [
        "shutdown",
        "feature-poweroff",
        "feature-reboot",
        "feature-suspend",
        "sysrq",
    ] {
        v.push(node(format!("{h}/control/{key}"), "", &owned));
    }
    for key in [
        "platform-feature-multiprocessor-suspend",
        "platform-feature-xs_reset_watches",
    ] {
        v.push(node(format!("{h}/control/{key}"), "1", &ro));
    }
    for dir in ["data", "drivers", "feature", "attr", "error"] {
        v.push(node(format!("{h}/{dir}"), "", &owned));
    }
    v.push(node(format!("{h}/device"), "", &ro));
    v.push(node(format!("{h}/device/suspend"), "", &ro));
    v.push(node(
        format!("{h}/device/suspend/event-channel"),
        "",
        &owned,
    ));
    v.push(node(format!("/libxl/{d}"), "", &dom0));
    v.push(node(format!("/libxl/{d}/type"), "pvh", &dom0));
    v
}

/// Top-level paths removed when a guest domain is destroyed (each with its subtree).
pub fn guest_roots(info: &DomainInfo) -> Vec<String> {
    vec![
        home(info.domid),
        format!("/vm/{}", info.uuid),
        format!("/libxl/{}", info.domid),
    ]
}

/// Dom0's nodes (xen-init-dom0).
pub fn dom0_nodes() -> Vec<StdNode> {
    let dom0 = vec!["n0".to_string()];
    vec![
        node("/local/domain/0".into(), "", &dom0),
        node("/local/domain/0/name".into(), "Domain-0", &dom0),
        node("/local/domain/0/domid".into(), "0", &dom0),
        node("/local/domain/0/backend".into(), "", &dom0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DomainState;

    #[test]
    fn parents_come_first_and_perms_follow_libxl() {
        let info = DomainInfo {
            domid: 5,
            name: "web".into(),
            uuid: "11111111-2222-3333-4444-555555555555".into(),
            memory_mib: 256,
            vcpus: 2,
            max_grant_frames: 4,
            created_ms: 1_700_000_000_123,
            state: DomainState::Blocked,
        };
        let nodes = guest_nodes(&info);
        let mut seen = std::collections::HashSet::new();
        for n in &nodes {
            let parent = &n.path[..n.path.rfind('/').unwrap()];
            let top = parent.is_empty()
                || parent == "/vm"
                || parent == "/local/domain"
                || parent == "/libxl";
            assert!(top || seen.contains(parent), "{} before its parent", n.path);
            seen.insert(n.path.clone());
        }
        let get = |p: &str| nodes.iter().find(|n| n.path == p).unwrap();
        assert_eq!(get("/local/domain/5").perms, ["n0", "r5"]);
        assert_eq!(get("/local/domain/5/control/shutdown").perms, ["n5"]);
        assert_eq!(get("/local/domain/5/data").perms, ["n5"]);
        assert_eq!(get("/local/domain/5/memory/target").value, "262144");
        assert_eq!(
            get("/local/domain/5/vm").value,
            "/vm/11111111-2222-3333-4444-555555555555"
        );
        assert_eq!(get("/local/domain/5/cpu/1/availability").value, "online");
        assert_eq!(guest_roots(&info)[0], "/local/domain/5");
    }
}
