#!/usr/bin/env sh
# This network's documents (see examples/seed_net/make.sh), into OUT (default
# symgrad-output/digits_cnn); `sh examples/digits_cnn/make_documents.sh examples/digits_cnn`
# rewrites the committed copies.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec sh "$here/../seed_net/make.sh" "$here/digits_cnn.toml" "$@"
