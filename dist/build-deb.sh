#!/bin/sh
# Builds target/debian/ossrelay_<version>-1_<arch>.deb: the release binary,
# the systemd unit (installed, not enabled), the man page, bash
# completions, the guide, and /etc/ossrelay/relay.toml as a conffile.
# Needs cargo-deb (cargo install cargo-deb --locked).
#
#   dist/build-deb.sh && sudo dpkg -i target/debian/ossrelay_*.deb
set -eu
cd "$(dirname "$0")/.."
cargo build --release
mkdir -p target/dist
target/release/ossrelay man | gzip -9n > target/dist/ossrelay.1.gz
target/release/ossrelay completions bash > target/dist/ossrelay.bash
cargo deb --no-build "$@"
