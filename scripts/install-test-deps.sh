#!/usr/bin/env bash
# Installs what the tests need beyond npm packages: Dovecot (IMAP tests), python3 (an
# independent zip reader/writer, HTML parser, CSV reader and PNG decoder), Chromium (renders
# the `report` HTML headless) and strace (sees which system calls make a Maildir run durable). Run by `npm test`; a no-op when all are there.
set -euo pipefail
missing=()
[ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
command -v python3 >/dev/null || missing+=(python3)
command -v chromium >/dev/null || missing+=(chromium)
command -v strace >/dev/null || missing+=(strace)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "install-test-deps: cannot install ${missing[*]} (not root, no sudo); the tests that need them will say so" >&2
  exit 0
fi
echo "install-test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# The package tries to start its service; there is none to start here, which is fine.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
