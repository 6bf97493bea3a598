# Shared by download_first_stages.sh and download_models.sh (source it; not run directly).
# fetch NAME URL: resumable download with curl -C - (or wget -c, or the python fallback), then
# `scripts/download.py verify` checks the sha256 (recording it when none is published) and unpacks.

fetch() {
    local name=$1 url=$2 dest status=0
    dest=$(python scripts/download.py path "$name") || return 1
    mkdir -p "$(dirname "$dest")"
    if [ -f "$dest" ]; then
        python scripts/download.py verify "$name" "$dest"
        return
    fi
    local auth=()
    if [ -n "${HF_TOKEN:-}" ]; then auth=(-H "Authorization: Bearer $HF_TOKEN"); fi
    echo "downloading $name from $url"
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 3 -C - "${auth[@]}" -o "$dest.part" "$url" || status=$?
    elif command -v wget >/dev/null 2>&1; then
        local wauth=()
        if [ -n "${HF_TOKEN:-}" ]; then wauth=(--header="Authorization: Bearer $HF_TOKEN"); fi
        wget -c "${wauth[@]}" -O "$dest.part" "$url" || status=$?
    else
        python scripts/download.py fetch "$name"
        return
    fi
    if [ "$status" -ne 0 ]; then
        case $status in
            5|6|7|28) echo "error: $name: cannot reach $(echo "$url" | cut -d/ -f3): this machine looks offline or the server is down; download $url elsewhere, put it at $dest and run: python scripts/download.py verify $name $dest" >&2 ;;
            22) echo "error: $name: the server refused the download (HTTP error); gated files need a Hugging Face login, licence acceptance and HF_TOKEN" >&2 ;;
            *) echo "error: $name: download failed (exit $status); rerun to resume from $dest.part" >&2 ;;
        esac
        return 1
    fi
    mv "$dest.part" "$dest"
    python scripts/download.py verify "$name" "$dest"
}

fetch_selected() {  # fetch_selected "name url" ... -- [names...]
    local entries=() wanted=() failed=0
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do entries+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    wanted=("$@")
    for entry in "${entries[@]}"; do
        local name=${entry%% *} url=${entry#* }
        if [ ${#wanted[@]} -eq 0 ] || printf '%s\n' "${wanted[@]}" | grep -qx "$name"; then
            fetch "$name" "$url" || failed=1
        fi
    done
    return $failed
}
