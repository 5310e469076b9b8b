#!/usr/bin/env bash
# Fetch NVRTC (CUDA 11.8, Debian bookworm non-free) into .cache/nvrtc, unpacked, not installed, so
# tests/cuda_nvrtc.test.ts can compile every kernel through our NVRTC binding on a machine without
# a GPU. The system's apt configuration is left alone (a private source list and state folder).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/nvrtc
lib=$dest/usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2
[ -e "$lib" ] && { echo "NVRTC already in $dest"; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/debs" "$dest"
echo "deb http://deb.debian.org/debian bookworm main non-free" >"$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$work/lists" -o Debug::NoLocking=1)
apt-get "${apt_opts[@]}" update -qq
(cd "$work/debs" && apt-get "${apt_opts[@]}" download libnvrtc11.2 libnvrtc-builtins11.8 2>/dev/null)
for f in "$work"/debs/*.deb; do dpkg -x "$f" "$dest"; done
echo "NVRTC unpacked: $lib"
