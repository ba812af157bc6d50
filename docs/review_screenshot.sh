#!/usr/bin/env bash
# Makes docs/review.png, the picture of the review page in docs/method.md: a BadNets-poisoned copy of the
# built-in task (10 % of 300 samples), scanned by the shipped byorn-tiny, the page photographed by
# headless Chromium (Debian's package: apt-get install chromium). Run from the repository root.
set -euo pipefail
out=runs/review_demo
rm -rf "$out"
HF_HUB_OFFLINE=1 byorn poison --attack badnets -a size=0.25 --rate 0.1 --n 300 --out "$out/data"
HF_HUB_OFFLINE=1 byorn scan --data "$out/data/data.json" --out "$out/scan"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --hide-scrollbars \
  --window-size=1200,1500 --screenshot="$PWD/docs/review.png" "file://$PWD/$out/scan/review.html"
