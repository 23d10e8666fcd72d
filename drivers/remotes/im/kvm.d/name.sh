#!/bin/sh
# im/kvm.d/name.sh <hid> <host>: what the host is. HYPERVISOR=kvm, HOSTNAME (the host's own
# name, `uname -n`, which may differ from the name Nubo knows it by) and ARCH (`uname -m`).

fail() {
    echo "ERROR: name.sh: $*" >&2
    exit 1
}

name=$(uname -n) && [ -n "$name" ] || fail "cannot read the host name (uname -n)"
arch=$(uname -m) && [ -n "$arch" ] || fail "cannot read the architecture (uname -m)"

echo "HYPERVISOR=kvm"
echo "HOSTNAME=$name"
echo "ARCH=$arch"
