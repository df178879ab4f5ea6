//! Host network configuration and the configuration grammars.
//!
//! Two rooms: the kernel side (rtnetlink links/addresses/routes, network namespaces,
//! TAP devices, sysctls) and the text side (xl.cfg subset, xl vif spec, rate strings).
//! Nothing here holds runtime state.

pub mod netns;
pub mod rtnl;
pub mod sysctl;
pub mod tap;

pub mod netdef;
pub mod netem;
pub mod rate;
pub mod vifnat;
pub mod vifspec;
pub mod xlcfg;
