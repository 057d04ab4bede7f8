#!/usr/bin/env bash
# Vendor the official Socket.IO JavaScript client into static/vendor/ (no CDN, works offline).
#
#   bash scripts/update-socketio-client.sh            # the pinned version below
#   bash scripts/update-socketio-client.sh 4.8.4      # another 4.x version
#
# It downloads the `socket.io-client` package from the npm registry with `npm pack`, checks the
# tarball's integrity against the registry's, and copies the ES module build, its source map
# and the licence. Commit the result; the page imports ./vendor/socket.io.esm.min.js.
set -euo pipefail

VERSION="${1:-4.8.4}"
case "$VERSION" in
    4.*) ;;
    *) echo "socket.io-client $VERSION: only 4.x speaks the protocol of python-socketio 5" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
npm pack --silent "socket.io-client@$VERSION" >/dev/null
TARBALL="socket.io-client-$VERSION.tgz"
EXPECTED="$(npm view "socket.io-client@$VERSION" dist.integrity)"
ACTUAL="sha512-$(openssl dgst -sha512 -binary "$TARBALL" | openssl base64 -A)"
if [ "$EXPECTED" != "$ACTUAL" ]; then
    echo "integrity mismatch for $TARBALL: registry $EXPECTED, got $ACTUAL" >&2
    exit 1
fi
tar -xzf "$TARBALL"

mkdir -p "$DEST"
cp package/dist/socket.io.esm.min.js "$DEST/socket.io.esm.min.js"
if [ -f package/dist/socket.io.esm.min.js.map ]; then
    cp package/dist/socket.io.esm.min.js.map "$DEST/socket.io.esm.min.js.map"
fi
cp package/LICENSE "$DEST/socket.io-client.LICENSE"
printf 'socket.io-client %s\n%s\n' "$VERSION" "$ACTUAL" >"$DEST/socket.io-client.VERSION"
echo "static/vendor: socket.io-client $VERSION ($ACTUAL)"
