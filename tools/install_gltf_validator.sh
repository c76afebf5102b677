#!/usr/bin/env bash
# Install the Khronos glTF validator (npm package gltf-validator) into tools/node_modules (project-local).
# Used by the GLB tests (tests/test_export*.py); they skip with a reason when node or the package is absent.
set -euo pipefail
cd "$(dirname "$0")"
VERSION="${GLTF_VALIDATOR_VERSION:-2.0.0-dev.3.10}"
command -v npm >/dev/null || { echo "npm not found: install nodejs + npm (Debian: apt-get install nodejs npm)" >&2; exit 1; }
if [ -f node_modules/gltf-validator/package.json ]; then exit 0; fi
npm install --no-save --no-audit --no-fund --prefix . "gltf-validator@${VERSION}"
