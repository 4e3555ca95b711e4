#!/usr/bin/env bash
# Refresh the browser libraries the pages serve themselves (no CDN at run time):
#
#   scripts/vendor_assets.sh
#
# Each library is taken from its npm package at the pinned version below (`npm pack`, so
# nothing is installed or run), and its dist file, licence and version are copied to
# billing_api/web/static/vendor/<name>/. Bump a version here, run this, review, commit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# name  npm package  version  dist file  licence file
LIBRARIES=(
    "chartjs chart.js 4.6.1 dist/chart.umd.min.js LICENSE.md"
    "htmx htmx.org 2.0.11 dist/htmx.min.js LICENSE"
)
vendor=billing_api/web/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for entry in "${LIBRARIES[@]}"; do
    read -r name package version dist licence <<<"$entry"
    (cd "$work" && npm pack --silent "$package@$version" >/dev/null)
    mkdir -p "$work/$name"
    tar -xzf "$work/${package}-${version}.tgz" -C "$work/$name"
    mkdir -p "$vendor/$name"
    cp "$work/$name/package/$dist" "$vendor/$name/$(basename "$dist")"
    cp "$work/$name/package/$licence" "$vendor/$name/LICENSE"
    sha=$(sha256sum "$vendor/$name/$(basename "$dist")" | cut -d' ' -f1)
    printf '%s@%s %s sha256:%s\n' "$package" "$version" "$(basename "$dist")" "$sha" \
        >"$vendor/$name/VERSION"
    echo "vendored $package@$version → $vendor/$name" >&2
done
