#!/usr/bin/env bash
# Installs the browser the end-to-end tests of the reader pages drive (issue 12): Debian's
# Chromium, run headless by Playwright for Python (the `test` extra) with its
# executable_path, so Playwright never downloads a browser of its own.
#
# Not root, or no apt-get: says why and exits 0, so `make test` goes on; tests/browser.py
# then skips those tests with the reason (and fails them under CI=true).
set -uo pipefail

PACKAGES=(chromium)
BROWSER=/usr/bin/chromium

if [[ -x $BROWSER ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "browser: ${PACKAGES[*]} missing and not root: the browser tests will skip" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "browser: ${PACKAGES[*]} missing and no apt-get: the browser tests will skip" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log=/tmp/browser-apt.log
install() {
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$log" 2>&1
}
echo "browser: installing ${PACKAGES[*]} (apt-get)" >&2
if ! install; then
    apt-get update -q >>"$log" 2>&1
    if ! install; then
        echo "browser: apt-get install ${PACKAGES[*]} failed (see $log):" \
             "the browser tests will skip" >&2
        tail -5 "$log" >&2
        exit 0
    fi
fi
echo "browser: installed $(dpkg-query -W -f='${Package} ${Version}' "${PACKAGES[@]}")" >&2
