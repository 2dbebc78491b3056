#!/usr/bin/env bash
# Packages the built filter as a Wasm OCI image in an OCI image layout
# directory, without a registry, and checks the layout with skopeo.
#
#   scripts/oci-image.sh [OUT_DIR]        (default target/oci)
#   env: WASM=<file>  TAG=<tag> (default: the crate version)
#
# Writes OUT_DIR/hokusai-mlflow-auth/ and prints the manifest digest (what
# Istio's WasmPlugin and Envoy Gateway's image `sha256` compare) and the
# .wasm's sha256 (what an Envoy vm_config remote source compares). Push with
#   skopeo copy --preserve-digests oci:OUT_DIR/hokusai-mlflow-auth:TAG docker://REGISTRY/REPO:TAG
#
# Format: the "compat" Wasm image variant, one application/vnd.oci.image.layer.v1.tar+gzip
# layer holding plugin.wasm. Istio and Envoy Gateway both read it (the same
# fetcher code: the last layer, this media type, the file named plugin.wasm),
# and so does every registry and OCI tool. Their other accepted variant, a raw
# application/vnd.module.wasm.content.layer.v1+wasm layer, must come with
# exactly two layers and custom media types some registries refuse; see
# docs/deployment.md. Byte-reproducible: same .wasm, same digests.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/oci}
WASM=${WASM:-target/wasm32-wasip1/release/hokusai_mlflow_auth.wasm}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)}
NAME=hokusai-mlflow-auth
LAYER_TYPE=application/vnd.oci.image.layer.v1.tar+gzip

die() { echo "oci-image: $*" >&2; exit 1; }
[ -f "$WASM" ] || die "$WASM is missing: run scripts/setup.sh"
[ "$(head -c 4 "$WASM" | od -An -tx1 | tr -d ' \n')" = 0061736d ] || die "$WASM is not a wasm module"
[[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] || die "bad tag: $TAG"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

layout=$OUT/$NAME
rm -rf "$layout"
mkdir -p "$layout/blobs/sha256"
blobs=$layout/blobs/sha256
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The layer: plugin.wasm alone, with fixed owner, mode, time and order, so
# that the digests depend on the .wasm only.
mkdir "$work/root"
cp "$WASM" "$work/root/plugin.wasm"
tar --format=ustar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --mode=0644 \
  -C "$work/root" -cf "$work/layer.tar" plugin.wasm
diff_id=$(sha "$work/layer.tar")
gzip -n -9 -c "$work/layer.tar" > "$work/layer.tar.gz"
layer=$(sha "$work/layer.tar.gz")
mv "$work/layer.tar.gz" "$blobs/$layer"

# Platform as Go names Wasm (GOOS=wasip1 GOARCH=wasm); the consumers ignore it.
printf '{"architecture":"wasm","os":"wasip1","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$diff_id" > "$work/config.json"
config=$(sha "$work/config.json")
config_size=$(size "$work/config.json")
mv "$work/config.json" "$blobs/$config"

# module.wasm.image/variant=compat: the Wasm image spec's marker for this variant.
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"%s","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.title":"plugin.wasm"}}],"annotations":{"module.wasm.image/variant":"compat","org.opencontainers.image.title":"%s","org.opencontainers.image.version":"%s"}}' \
  "$config" "$config_size" "$LAYER_TYPE" "$layer" "$(size "$blobs/$layer")" "$NAME" "$TAG" > "$work/manifest.json"
manifest=$(sha "$work/manifest.json")
manifest_size=$(size "$work/manifest.json")
mv "$work/manifest.json" "$blobs/$manifest"

printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest" "$manifest_size" "$TAG" > "$layout/index.json"

# --- check it with a standard OCI tool ------------------------------------
if ! command -v skopeo >/dev/null; then
  [ "$(id -u)" = 0 ] || die "skopeo is missing: apt-get install skopeo"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq skopeo >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq skopeo >/dev/null; } ||
    die "could not install skopeo"
fi
ref="oci:$layout:$TAG"
# inspect: skopeo resolves the tag through index.json and parses manifest
# and config as a registry client would.
skopeo inspect "$ref" > "$work/inspect.json"
skopeo inspect --raw "$ref" > "$work/raw.json"
python3 - "$work" "sha256:$manifest" "sha256:$layer" "$LAYER_TYPE" <<'EOF'
import json, sys
work, digest, layer, layer_type = sys.argv[1:]
info, raw = (json.load(open(f"{work}/{n}.json")) for n in ("inspect", "raw"))
assert info["Digest"] == digest, (info["Digest"], digest)
assert info["Layers"] == [layer], info["Layers"]
assert [l["mediaType"] for l in raw["layers"]] == [layer_type], raw["layers"]
EOF
# copy: skopeo re-reads every blob and checks it against its digest; the
# copied layer must hold exactly the .wasm.
skopeo copy -q --preserve-digests "$ref" "dir:$work/copy" >/dev/null
[ "$(sha "$work/copy/manifest.json")" = "$manifest" ] || die "skopeo copy changed the manifest"
[ "$(tar -xzOf "$work/copy/$layer" plugin.wasm | sha256sum | cut -d' ' -f1)" = "$(sha "$WASM")" ] ||
  die "the layer's plugin.wasm differs from $WASM"

echo "layout=$layout"
echo "tag=$TAG"
echo "manifest_digest=sha256:$manifest"
echo "wasm_sha256=$(sha "$WASM")"
echo "checked_with=$(skopeo --version)"
