#!/usr/bin/env bash
# Installs the real mail servers the bounce tests run (issue 11): Debian's Postfix and
# Dovecot (IMAP). The tests start private instances on loopback ports; the
# distribution's own services must not be left running, so a policy-rc.d forbids the
# packages to start them and whatever is running anyway is stopped.
#
# Not root, or no apt-get: says why and exits 0, so `make test` goes on; the fixture then
# skips those tests with the reason (and fails them under CI=true).
set -uo pipefail

PACKAGES=(postfix dovecot-imapd)
BINARIES=(/usr/sbin/postfix /usr/sbin/dovecot /usr/lib/dovecot/imap)

have_all() {
    local binary
    for binary in "${BINARIES[@]}"; do [[ -x $binary ]] || return 1; done
    getent passwd postfix >/dev/null && getent group postdrop >/dev/null
}

if have_all; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "mail servers: ${PACKAGES[*]} missing and not root: the Postfix/Dovecot tests will skip" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "mail servers: ${PACKAGES[*]} missing and no apt-get: the Postfix/Dovecot tests will skip" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
saved_policy=""
if [[ -e $policy ]]; then
    saved_policy=$(mktemp)
    cp -p "$policy" "$saved_policy"
fi
restore_policy() {
    if [[ -n $saved_policy ]]; then mv -f "$saved_policy" "$policy"; else rm -f "$policy"; fi
}
trap restore_policy EXIT
# 101: "action forbidden by policy": invoke-rc.d starts no service during the install.
printf '#!/bin/sh\nexit 101\n' >"$policy"
chmod 755 "$policy"

echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "postfix postfix/mailname string localhost" | debconf-set-selections

install() {
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/tmp/mailservers-apt.log 2>&1
}
echo "mail servers: installing ${PACKAGES[*]} (apt-get)" >&2
if ! install; then
    apt-get update -q >>/tmp/mailservers-apt.log 2>&1
    if ! install; then
        echo "mail servers: apt-get install ${PACKAGES[*]} failed (see /tmp/mailservers-apt.log):" \
             "the Postfix/Dovecot tests will skip" >&2
        tail -5 /tmp/mailservers-apt.log >&2
        exit 0
    fi
fi

# Where a service manager started them regardless (a policy-rc.d is advisory), stop them:
# the system instances would hold ports 25/143/993 and are not the tests' business.
for service in postfix dovecot; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
        systemctl stop "$service" >/dev/null 2>&1 || true
    fi
done
if [[ -f /var/spool/postfix/pid/master.pid ]]; then
    /usr/sbin/postfix stop >/dev/null 2>&1 || true
fi
if [[ -f /run/dovecot/master.pid ]]; then
    kill "$(cat /run/dovecot/master.pid)" 2>/dev/null || true
fi
echo "mail servers: installed $(dpkg-query -W -f='${Package} ${Version}  ' "${PACKAGES[@]}")" >&2
