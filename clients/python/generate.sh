#!/usr/bin/env bash
# Generates the Python stubs of the Switchboard API into clients/python/gen/ (package
# switchboard/v1/*_pb2.py, *_pb2_grpc.py). Run with the Python that has grpcio-tools.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
python="${PYTHON:-python3}"
rm -rf "$here/gen"
mkdir -p "$here/gen"
"$python" -m grpc_tools.protoc -I "$root/proto" \
  --python_out="$here/gen" --grpc_python_out="$here/gen" \
  "$root"/proto/switchboard/v1/*.proto
touch "$here/gen/switchboard/__init__.py" "$here/gen/switchboard/v1/__init__.py"
echo "stubs in $here/gen"
