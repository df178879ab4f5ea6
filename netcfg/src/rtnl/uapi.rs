//! Numeric constants of the Linux rtnetlink ABI.
//!
//! Values come from the kernel's uapi headers (`linux/netlink.h`, `linux/rtnetlink.h`,
//! `linux/if_link.h`, `linux/if_addr.h`, `linux/neighbour.h`, `linux/veth.h`, `linux/if.h`);
//! the `uapi_values_match_kernel_headers` test compiles a C program against the installed
//! headers and compares every value. Only what this crate sends or decodes is listed, plus the
//! neighbours of those values in the same enums where that makes the table easier to check.
#![allow(dead_code)] // an ABI table: a few values are listed for completeness only

// linux/netlink.h
pub(crate) const NETLINK_ROUTE: i32 = 0;
pub(crate) const SOL_NETLINK: i32 = 270;
pub(crate) const NETLINK_CAP_ACK: i32 = 10;
pub(crate) const NETLINK_EXT_ACK: i32 = 11;

pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_OVERRUN: u16 = 4;

pub(crate) const NLM_F_REQUEST: u16 = 0x01;
pub(crate) const NLM_F_MULTI: u16 = 0x02;
pub(crate) const NLM_F_ACK: u16 = 0x04;
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_REPLACE: u16 = 0x100;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_APPEND: u16 = 0x800;
pub(crate) const NLM_F_CAPPED: u16 = 0x100;
pub(crate) const NLM_F_ACK_TLVS: u16 = 0x200;

pub(crate) const NLMSGERR_ATTR_MSG: u16 = 1;

pub(crate) const NLA_F_NESTED: u16 = 1 << 15;
pub(crate) const NLA_F_NET_BYTEORDER: u16 = 1 << 14;

// linux/rtnetlink.h: message types
pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_DELLINK: u16 = 17;
pub(crate) const RTM_GETLINK: u16 = 18;
pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_DELADDR: u16 = 21;
pub(crate) const RTM_GETADDR: u16 = 22;
pub(crate) const RTM_NEWROUTE: u16 = 24;
pub(crate) const RTM_DELROUTE: u16 = 25;
pub(crate) const RTM_GETROUTE: u16 = 26;
pub(crate) const RTM_NEWNEIGH: u16 = 28;
pub(crate) const RTM_DELNEIGH: u16 = 29;
pub(crate) const RTM_GETNEIGH: u16 = 30;

// linux/rtnetlink.h: route attributes
pub(crate) const RTA_DST: u16 = 1;
pub(crate) const RTA_SRC: u16 = 2;
pub(crate) const RTA_IIF: u16 = 3;
pub(crate) const RTA_OIF: u16 = 4;
pub(crate) const RTA_GATEWAY: u16 = 5;
pub(crate) const RTA_PRIORITY: u16 = 6;
pub(crate) const RTA_PREFSRC: u16 = 7;
pub(crate) const RTA_METRICS: u16 = 8;
pub(crate) const RTA_MULTIPATH: u16 = 9;
pub(crate) const RTA_TABLE: u16 = 15;
pub(crate) const RTA_PREF: u16 = 20;
pub(crate) const RTA_NH_ID: u16 = 30;

// linux/rtnetlink.h: route tables, protocols, scopes, types, flags
pub(crate) const RT_TABLE_UNSPEC: u32 = 0;
pub(crate) const RT_TABLE_MAIN: u32 = 254;
pub(crate) const RT_TABLE_LOCAL: u32 = 255;

pub(crate) const RTPROT_UNSPEC: u8 = 0;
pub(crate) const RTPROT_REDIRECT: u8 = 1;
pub(crate) const RTPROT_KERNEL: u8 = 2;
pub(crate) const RTPROT_BOOT: u8 = 3;
pub(crate) const RTPROT_STATIC: u8 = 4;
pub(crate) const RTPROT_RA: u8 = 9;
pub(crate) const RTPROT_DHCP: u8 = 16;

pub(crate) const RT_SCOPE_UNIVERSE: u8 = 0;
pub(crate) const RT_SCOPE_SITE: u8 = 200;
pub(crate) const RT_SCOPE_LINK: u8 = 253;
pub(crate) const RT_SCOPE_HOST: u8 = 254;
pub(crate) const RT_SCOPE_NOWHERE: u8 = 255;

pub(crate) const RTN_UNSPEC: u8 = 0;
pub(crate) const RTN_UNICAST: u8 = 1;
pub(crate) const RTN_LOCAL: u8 = 2;
pub(crate) const RTN_BROADCAST: u8 = 3;
pub(crate) const RTN_ANYCAST: u8 = 4;
pub(crate) const RTN_MULTICAST: u8 = 5;
pub(crate) const RTN_BLACKHOLE: u8 = 6;
pub(crate) const RTN_UNREACHABLE: u8 = 7;
pub(crate) const RTN_PROHIBIT: u8 = 8;
pub(crate) const RTN_THROW: u8 = 9;

pub(crate) const RTNH_F_ONLINK: u32 = 4;

// linux/if_link.h
pub(crate) const IFLA_ADDRESS: u16 = 1;
pub(crate) const IFLA_BROADCAST: u16 = 2;
pub(crate) const IFLA_IFNAME: u16 = 3;
pub(crate) const IFLA_MTU: u16 = 4;
pub(crate) const IFLA_LINK: u16 = 5;
pub(crate) const IFLA_MASTER: u16 = 10;
pub(crate) const IFLA_TXQLEN: u16 = 13;
pub(crate) const IFLA_OPERSTATE: u16 = 16;
pub(crate) const IFLA_LINKINFO: u16 = 18;
pub(crate) const IFLA_STATS64: u16 = 23;
pub(crate) const IFLA_NET_NS_FD: u16 = 28;
pub(crate) const IFLA_LINK_NETNSID: u16 = 37;
pub(crate) const IFLA_MIN_MTU: u16 = 50;
pub(crate) const IFLA_MAX_MTU: u16 = 51;
pub(crate) const IFLA_PERM_ADDRESS: u16 = 54;

pub(crate) const IFLA_INFO_KIND: u16 = 1;
pub(crate) const IFLA_INFO_DATA: u16 = 2;
pub(crate) const IFLA_INFO_SLAVE_KIND: u16 = 4;

// linux/veth.h
pub(crate) const VETH_INFO_PEER: u16 = 1;

// linux/if.h: net_device_flags and IF_OPER_*
pub(crate) const IFF_UP: u32 = 0x1;
pub(crate) const IFF_BROADCAST: u32 = 0x2;
pub(crate) const IFF_LOOPBACK: u32 = 0x8;
pub(crate) const IFF_POINTOPOINT: u32 = 0x10;
pub(crate) const IFF_RUNNING: u32 = 0x40;
pub(crate) const IFF_NOARP: u32 = 0x80;
pub(crate) const IFF_PROMISC: u32 = 0x100;
pub(crate) const IFF_MULTICAST: u32 = 0x1000;
pub(crate) const IFF_LOWER_UP: u32 = 0x10000;

pub(crate) const IF_OPER_UNKNOWN: u8 = 0;
pub(crate) const IF_OPER_NOTPRESENT: u8 = 1;
pub(crate) const IF_OPER_DOWN: u8 = 2;
pub(crate) const IF_OPER_LOWERLAYERDOWN: u8 = 3;
pub(crate) const IF_OPER_TESTING: u8 = 4;
pub(crate) const IF_OPER_DORMANT: u8 = 5;
pub(crate) const IF_OPER_UP: u8 = 6;

// linux/if_addr.h
pub(crate) const IFA_ADDRESS: u16 = 1;
pub(crate) const IFA_LOCAL: u16 = 2;
pub(crate) const IFA_LABEL: u16 = 3;
pub(crate) const IFA_BROADCAST: u16 = 4;
pub(crate) const IFA_CACHEINFO: u16 = 6;
pub(crate) const IFA_FLAGS: u16 = 8;
pub(crate) const IFA_RT_PRIORITY: u16 = 9;
pub(crate) const IFA_PROTO: u16 = 11;

pub(crate) const IFA_F_SECONDARY: u32 = 0x01;
pub(crate) const IFA_F_NODAD: u32 = 0x02;
pub(crate) const IFA_F_OPTIMISTIC: u32 = 0x04;
pub(crate) const IFA_F_DADFAILED: u32 = 0x08;
pub(crate) const IFA_F_HOMEADDRESS: u32 = 0x10;
pub(crate) const IFA_F_DEPRECATED: u32 = 0x20;
pub(crate) const IFA_F_TENTATIVE: u32 = 0x40;
pub(crate) const IFA_F_PERMANENT: u32 = 0x80;
pub(crate) const IFA_F_MANAGETEMPADDR: u32 = 0x100;
pub(crate) const IFA_F_NOPREFIXROUTE: u32 = 0x200;
pub(crate) const IFA_F_MCAUTOJOIN: u32 = 0x400;
pub(crate) const IFA_F_STABLE_PRIVACY: u32 = 0x800;

// linux/neighbour.h
pub(crate) const NDA_DST: u16 = 1;
pub(crate) const NDA_LLADDR: u16 = 2;
pub(crate) const NTF_PROXY: u8 = 0x08;
pub(crate) const NTF_ROUTER: u8 = 0x80;
pub(crate) const NUD_INCOMPLETE: u16 = 0x01;
pub(crate) const NUD_REACHABLE: u16 = 0x02;
pub(crate) const NUD_STALE: u16 = 0x04;
pub(crate) const NUD_DELAY: u16 = 0x08;
pub(crate) const NUD_PROBE: u16 = 0x10;
pub(crate) const NUD_FAILED: u16 = 0x20;
pub(crate) const NUD_NOARP: u16 = 0x40;
pub(crate) const NUD_PERMANENT: u16 = 0x80;

// linux/socket.h
pub(crate) const AF_UNSPEC: u8 = 0;
pub(crate) const AF_INET: u8 = 2;
pub(crate) const AF_INET6: u8 = 10;

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Every constant above, as (C expression, our value).
    fn table() -> Vec<(&'static str, i64)> {
        macro_rules! t {
            ($($name:ident),* $(,)?) => { vec![$((stringify!($name), $name as i64)),*] };
        }
        t![
            NETLINK_ROUTE,
            SOL_NETLINK,
            NETLINK_CAP_ACK,
            NETLINK_EXT_ACK,
            NLMSG_NOOP,
            NLMSG_ERROR,
            NLMSG_DONE,
            NLMSG_OVERRUN,
            NLM_F_REQUEST,
            NLM_F_MULTI,
            NLM_F_ACK,
            NLM_F_DUMP_INTR,
            NLM_F_DUMP,
            NLM_F_REPLACE,
            NLM_F_EXCL,
            NLM_F_CREATE,
            NLM_F_APPEND,
            NLM_F_CAPPED,
            NLM_F_ACK_TLVS,
            NLMSGERR_ATTR_MSG,
            NLA_F_NESTED,
            NLA_F_NET_BYTEORDER,
            RTM_NEWLINK,
            RTM_DELLINK,
            RTM_GETLINK,
            RTM_NEWADDR,
            RTM_DELADDR,
            RTM_GETADDR,
            RTM_NEWROUTE,
            RTM_DELROUTE,
            RTM_GETROUTE,
            RTM_NEWNEIGH,
            RTM_DELNEIGH,
            RTM_GETNEIGH,
            RTA_DST,
            RTA_SRC,
            RTA_IIF,
            RTA_OIF,
            RTA_GATEWAY,
            RTA_PRIORITY,
            RTA_PREFSRC,
            RTA_METRICS,
            RTA_MULTIPATH,
            RTA_TABLE,
            RTA_PREF,
            RTA_NH_ID,
            RT_TABLE_UNSPEC,
            RT_TABLE_MAIN,
            RT_TABLE_LOCAL,
            RTPROT_UNSPEC,
            RTPROT_REDIRECT,
            RTPROT_KERNEL,
            RTPROT_BOOT,
            RTPROT_STATIC,
            RTPROT_RA,
            RTPROT_DHCP,
            RT_SCOPE_UNIVERSE,
            RT_SCOPE_SITE,
            RT_SCOPE_LINK,
            RT_SCOPE_HOST,
            RT_SCOPE_NOWHERE,
            RTN_UNSPEC,
            RTN_UNICAST,
            RTN_LOCAL,
            RTN_BROADCAST,
            RTN_ANYCAST,
            RTN_MULTICAST,
            RTN_BLACKHOLE,
            RTN_UNREACHABLE,
            RTN_PROHIBIT,
            RTN_THROW,
            RTNH_F_ONLINK,
            IFLA_ADDRESS,
            IFLA_BROADCAST,
            IFLA_IFNAME,
            IFLA_MTU,
            IFLA_LINK,
            IFLA_MASTER,
            IFLA_TXQLEN,
            IFLA_OPERSTATE,
            IFLA_LINKINFO,
            IFLA_STATS64,
            IFLA_NET_NS_FD,
            IFLA_LINK_NETNSID,
            IFLA_MIN_MTU,
            IFLA_MAX_MTU,
            IFLA_PERM_ADDRESS,
            IFLA_INFO_KIND,
            IFLA_INFO_DATA,
            IFLA_INFO_SLAVE_KIND,
            VETH_INFO_PEER,
            IFF_UP,
            IFF_BROADCAST,
            IFF_LOOPBACK,
            IFF_POINTOPOINT,
            IFF_RUNNING,
            IFF_NOARP,
            IFF_PROMISC,
            IFF_MULTICAST,
            IFF_LOWER_UP,
            IF_OPER_UNKNOWN,
            IF_OPER_NOTPRESENT,
            IF_OPER_DOWN,
            IF_OPER_LOWERLAYERDOWN,
            IF_OPER_TESTING,
            IF_OPER_DORMANT,
            IF_OPER_UP,
            IFA_ADDRESS,
            IFA_LOCAL,
            IFA_LABEL,
            IFA_BROADCAST,
            IFA_CACHEINFO,
            IFA_FLAGS,
            IFA_RT_PRIORITY,
            IFA_PROTO,
            IFA_F_SECONDARY,
            IFA_F_NODAD,
            IFA_F_OPTIMISTIC,
            IFA_F_DADFAILED,
            IFA_F_HOMEADDRESS,
            IFA_F_DEPRECATED,
            IFA_F_TENTATIVE,
            IFA_F_PERMANENT,
            IFA_F_MANAGETEMPADDR,
            IFA_F_NOPREFIXROUTE,
            IFA_F_MCAUTOJOIN,
            IFA_F_STABLE_PRIVACY,
            NDA_DST,
            NDA_LLADDR,
            NTF_PROXY,
            NTF_ROUTER,
            NUD_INCOMPLETE,
            NUD_REACHABLE,
            NUD_STALE,
            NUD_DELAY,
            NUD_PROBE,
            NUD_FAILED,
            NUD_NOARP,
            NUD_PERMANENT,
            AF_UNSPEC,
            AF_INET,
            AF_INET6,
        ]
    }

    /// Compiles a C program against the installed uapi headers and compares each value.
    /// Needs `cc` and the linux-libc-dev headers (present on the build machines, §0).
    #[test]
    fn uapi_values_match_kernel_headers() {
        let dir = std::env::temp_dir().join(format!("netcfg-uapi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut src = String::from(
            "#include <stdio.h>\n#include <sys/socket.h>\n#include <linux/netlink.h>\n\
             #include <linux/rtnetlink.h>\n#include <linux/if_link.h>\n#include <linux/if_addr.h>\n\
             #include <linux/neighbour.h>\n#include <linux/veth.h>\n#include <linux/if.h>\n\
             #ifndef SOL_NETLINK\n#define SOL_NETLINK 270\n#endif\nint main(void){\n",
        );
        for (name, _) in table() {
            src.push_str(&format!(
                "printf(\"%s %lld\\n\", \"{name}\", (long long)({name}));\n"
            ));
        }
        src.push_str("return 0;}\n");
        let c = dir.join("uapi.c");
        let exe = dir.join("uapi");
        std::fs::write(&c, src).unwrap();
        let status = Command::new("cc")
            .arg(&c)
            .arg("-o")
            .arg(&exe)
            .status()
            .unwrap();
        assert!(status.success(), "compiling the uapi check failed");
        let out = Command::new(&exe).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut checked = 0;
        for ((name, ours), line) in table().into_iter().zip(text.lines()) {
            let (cname, cval) = line.split_once(' ').unwrap();
            assert_eq!(cname, name);
            assert_eq!(
                cval.parse::<i64>().unwrap(),
                ours,
                "{name} differs from the kernel header"
            );
            checked += 1;
        }
        assert_eq!(checked, table().len());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
