# Shared helpers of domnet's vif hotplug scripts (Xen's contract, xen-networking.md §6.1).
# Sourced by vif-bridge, vif-route and vif-nat. The daemon runs a script as
#   <script> online|offline|add|remove type_if=vif
# with XENBUS_PATH (relative: backend/vif/<domid>/<devid>), XENBUS_TYPE,
# XENBUS_BASE_PATH, vif, netdev, script and XENSTORED_PATH (dom0's xenstore socket,
# so Xen's xenstore-read/xenstore-write talk to domnet). DOMNET names the domnet
# binary and DOMNET_RUN_DIR its daemon.
#
# Every process a script starts is on the attach path: a script reads only what the
# daemon does not already act on, and paths are taken apart with bash's own
# expansions. `vif` is already the device's final name (its vifname if it has one, as
# libxl passes it).

set -u
export LANG=POSIX
DOMNET="${DOMNET:-domnet}"

log() { echo "${0##*/}: $*" >&2; }

# fatal MSG: report through hotplug-error/hotplug-status (one transaction) and exit 1.
fatal() {
    xenstore-write "$XENBUS_PATH/hotplug-error" "$*" "$XENBUS_PATH/hotplug-status" error 2>/dev/null
    log "$*"
    exit 1
}

success() {
    xenstore-write "$XENBUS_PATH/hotplug-status" connected || fatal "cannot write hotplug-status"
}

xenstore_read() {
    local v
    v=$(xenstore-read "$@" 2>/dev/null) || fatal "xenstore-read $* failed"
    [ -n "$v" ] || fatal "xenstore-read $* returned nothing"
    echo "$v"
}

xenstore_read_default() {
    xenstore-read "$1" 2>/dev/null || echo "$2"
}

command="${1:-}"
shift || true
case "$command" in
    add|remove|online|offline) ;;
    *) log "invalid command: '$command'"; exit 1 ;;
esac
# name=value arguments (type_if=vif, bridge=…, ip=…) become variables, as in Xen.
for arg in "$@"; do
    case "$arg" in
        *=*) eval "${arg%%=*}=\"\${arg#*=}\"" ;;
    esac
done
type_if="${type_if:-vif}"
# Only online/offline do anything for a PV vif; add/remove are for emulated taps.
case "$command" in
    online|offline) [ "$type_if" = vif ] || exit 0 ;;
    add|remove) [ "$type_if" = tap ] || exit 0 ;;
esac
[ -n "${XENBUS_PATH:-}" ] || { log "XENBUS_PATH is not set"; exit 1; }
[ -n "${vif:-}" ] || fatal "vif is not set"
dev="$vif"
