#!/usr/bin/env sh
# This network's documents (see examples/seed_net/make.sh), into OUT (default
# symgrad-output/batchnorm_net); `sh examples/batchnorm_net/make.sh examples/batchnorm_net`
# rewrites the committed copies.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec sh "$here/../seed_net/make.sh" "$here/batchnorm_net.toml" "$@"
