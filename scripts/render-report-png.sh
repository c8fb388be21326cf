#!/usr/bin/env bash
# Renders a `report` HTML file to a PNG with headless Chromium (Debian package `chromium`;
# `npm test` installs it): scripts/render-report-png.sh REPORT.html OUT.png [WIDTHxHEIGHT]
# The screenshot is of the top WIDTHxHEIGHT CSS pixels (default 1280x2000) at scale 1. Chromium
# runs with a throwaway profile, no sandbox (it may run as root in CI), no GPU and no background
# networking; the report itself loads nothing (its CSP forbids it).
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT]" >&2
  exit 2
fi
html=$(realpath -- "$1")
png=$(realpath -m -- "$2")
size=${3:-1280x2000}
[[ $size =~ ^[0-9]+x[0-9]+$ ]] || { echo "$0: size must be WIDTHxHEIGHT, not $size" >&2; exit 2; }
[ -f "$html" ] || { echo "$0: no such file: $1" >&2; exit 2; }
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$browser" ] || { echo "$0: chromium is not installed (Debian package chromium)" >&2; exit 3; }
url=$(node -e 'process.stdout.write(require("node:url").pathToFileURL(process.argv[1]).href)' "$html")
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
rm -f -- "$png"
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
  --no-first-run --disable-extensions --disable-background-networking --disable-component-update \
  --user-data-dir="$work/profile" --window-size="${size/x/,}" --screenshot="$png" "$url" >"$work/log" 2>&1 || true
# Chromium's exit code is not reliable headless (it may exit 0 having failed, or crash on exit).
if [ ! -s "$png" ]; then
  echo "$0: chromium wrote no screenshot to $png; it said:" >&2
  cat "$work/log" >&2
  exit 1
fi
