#!/usr/bin/env bash
# Install the peer libraries that benchmarks/evasion_peers.py (and membership.py: ART's
# membership-inference attacks) compare bastion with, into the project's virtual environment. They
# are benchmark-only: never a dependency of bastion.
#
#   bash benchmarks/setup_peers.sh            (VENV=.venv by default)
#
# - adversarial-robustness-toolbox (ART) 1.20.1, pinned (ART_VERSION= overrides it), and multiprocess
#   (ART's AutoAttack imports it);
# - foolbox (with eagerpy);
# - torchattacks with --no-deps, plus what it really imports (scipy, requests, tqdm): it declares
#   torchvision, which has no CPU build matching our torch; torchattacks 3.5.1 never imports it;
# - the AutoAttack reference (github fra31/auto-attack, not on PyPI) as a snapshot in
#   benchmarks/_peers/auto-attack (git-ignored), put on sys.path by the benchmark, never installed.
#   Source: $AUTOATTACK_SRC (a folder or a git directory) if set, else `git clone` from GitHub.
#
# torch (and numpy) are pinned to the versions already installed through a pip constraint file, so
# no peer can upgrade or replace them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
[[ -d "$VENV" ]] && VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"
PEERS="$ROOT/benchmarks/_peers"
AA_DIR="$PEERS/auto-attack"
AA_URL="https://github.com/fra31/auto-attack"

if [[ ! -x "$PY" ]]; then
    echo "setup_peers: no Python at $PY; run 'make test' (or set VENV=...) first" >&2
    exit 2
fi
mkdir -p "$PEERS"

# --- pip packages, with torch and numpy held where they are -------------------------------------
CONSTRAINTS="$PEERS/constraints.txt"
"$PY" - "$CONSTRAINTS" <<'EOF'
import sys
from importlib.metadata import version

pins = [f"{name}=={version(name)}" for name in ("torch", "numpy")]
open(sys.argv[1], "w").write("\n".join(pins) + "\n")
print("setup_peers: pinning", ", ".join(pins))
EOF
PIP=("$PY" -m pip install --quiet --constraint "$CONSTRAINTS")
ART_VERSION="${ART_VERSION:-1.20.1}"  # the version the benchmarks' figures were measured with
"${PIP[@]}" "adversarial-robustness-toolbox==$ART_VERSION" multiprocess foolbox scipy requests tqdm
"${PIP[@]}" --no-deps torchattacks

# --- the AutoAttack reference snapshot ----------------------------------------------------------
snapshot_from_git_dir() {  # $1: a git directory (bare or .git); writes HEAD's files into $AA_DIR
    local git_dir="$1" mode type sha path n=0 skipped=0
    rm -rf "$AA_DIR" && mkdir -p "$AA_DIR"
    while IFS=$'\t' read -r meta path; do
        read -r mode type sha <<<"$meta"
        [[ "$type" == blob ]] || continue
        mkdir -p "$AA_DIR/$(dirname "$path")"
        # a partial snapshot may lack large blobs (example weights): skip them, the code is all text
        if git --git-dir="$git_dir" cat-file blob "$sha" >"$AA_DIR/$path" 2>/dev/null; then
            n=$((n + 1))
        else
            rm -f "$AA_DIR/$path"
            skipped=$((skipped + 1))
        fi
    done < <(git --git-dir="$git_dir" ls-tree -r HEAD)
    git --git-dir="$git_dir" rev-parse HEAD >"$AA_DIR/COMMIT"
    echo "setup_peers: auto-attack $(cat "$AA_DIR/COMMIT") from $git_dir ($n files, $skipped absent blobs skipped)"
}

if [[ -n "${AUTOATTACK_SRC:-}" ]]; then
    if git --git-dir="$AUTOATTACK_SRC" rev-parse --verify -q HEAD >/dev/null 2>&1; then
        snapshot_from_git_dir "$AUTOATTACK_SRC"
    elif git --git-dir="$AUTOATTACK_SRC/.git" rev-parse --verify -q HEAD >/dev/null 2>&1; then
        snapshot_from_git_dir "$AUTOATTACK_SRC/.git"
    elif [[ -f "$AUTOATTACK_SRC/autoattack/autoattack.py" ]]; then
        rm -rf "$AA_DIR" && mkdir -p "$AA_DIR"
        cp -R "$AUTOATTACK_SRC/." "$AA_DIR/"
        echo "setup_peers: auto-attack copied from the folder $AUTOATTACK_SRC"
    else
        echo "setup_peers: AUTOATTACK_SRC=$AUTOATTACK_SRC is neither a git directory nor a folder holding" \
            "autoattack/autoattack.py" >&2
        exit 2
    fi
elif [[ -f "$AA_DIR/autoattack/autoattack.py" ]]; then
    echo "setup_peers: auto-attack already in $AA_DIR (delete it or set AUTOATTACK_SRC to replace it)"
else
    tmp="$(mktemp -d)"
    if GIT_TERMINAL_PROMPT=0 timeout 300 git clone --quiet --depth 1 "$AA_URL" "$tmp/auto-attack" 2>/dev/null; then
        snapshot_from_git_dir "$tmp/auto-attack/.git"
        rm -rf "$tmp"
    else
        rm -rf "$tmp"
        echo "setup_peers: could not get the AutoAttack reference: 'git clone $AA_URL' failed (no network?)." >&2
        echo "  Point AUTOATTACK_SRC at a copy (a folder or a git directory) and run this again, e.g." >&2
        echo "  AUTOATTACK_SRC=/path/to/auto-attack bash benchmarks/setup_peers.sh" >&2
        echo "  The benchmark still runs without it and reports the reference as 'not installed'." >&2
        exit 1
    fi
fi

# --- check that every peer imports, and that torch is still the one we had ------------------------
cd "$ROOT/benchmarks"
"$PY" - <<'EOF'
import _peer_adapters as peers

for name, status in peers.peer_status().items():
    print(f"setup_peers: {name:12s} {status}")
import torch

print(f"setup_peers: torch {torch.__version__} (unchanged)")
EOF
