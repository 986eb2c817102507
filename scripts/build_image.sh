#!/bin/sh
# Build the remotemedia container image with podman (or docker).
#
#   scripts/build_image.sh [TAG]              # default tag: remotemedia:<version>
#   BASE_IMAGE=... scripts/build_image.sh     # another Python >= 3.11 base image
#   ENGINE=docker scripts/build_image.sh
#   PIP_CERT=/path/ca.pem scripts/build_image.sh   # pip behind a TLS-inspecting proxy
#
# The image runs `remotemedia serve` as user 10001 on 0.0.0.0:50051 (metrics on
# 9090), configured by environment variables; see the Containerfile.
set -eu
cd "$(dirname "$0")/.."
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' src/remotemedia/__init__.py)
tag=${1:-remotemedia:$version}
engine=${ENGINE:-$(command -v podman >/dev/null 2>&1 && echo podman || echo docker)}
set -- --file Containerfile --tag "$tag"
if [ -n "${BASE_IMAGE:-}" ]; then
    set -- "$@" --build-arg "BASE_IMAGE=$BASE_IMAGE"
fi
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    # pip's CA bundle (a TLS-inspecting proxy's), as a build secret: not in the image.
    set -- "$@" --secret "id=pip_cert,src=$PIP_CERT"
fi
# Anything in ENGINE_ARGS goes to the engine too (e.g. "--network host").
# shellcheck disable=SC2086
set -- "$@" ${ENGINE_ARGS:-}
echo "==> $engine build $* ."
"$engine" build "$@" .
echo "==> built $tag; run it with:"
echo "    $engine run --rm -p 50051:50051 --shm-size 1g -e GRPC_AUTH_TOKENS=change-me $tag"
