#!/usr/bin/env sh
# Regenerate this network's documents (see examples/seed_net/make.sh).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec sh "$here/../seed_net/make.sh" batchnorm_net.toml "$here"
