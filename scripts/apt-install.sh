# Sourced by the other scripts. `need COMMAND PACKAGE...` notes the Debian packages to
# install when COMMAND is missing; `install_needed` installs every one noted, with apt-get
# (through sudo unless root), and does nothing when none is.
missing=()

need() {
  command -v "$1" >/dev/null || missing+=("${@:2}")
}

# What building cache-layer needs: a C toolchain and make for the bundled librdkafka, and
# the full perl (not just perl-base) for OpenSSL's build scripts.
need_build_tools() {
  need cc build-essential
  need make build-essential
  perl -MIPC::Cmd -MFindBin -e 1 2>/dev/null || missing+=(perl)
}

install_needed() {
  ((${#missing[@]})) || return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} with apt-get" >&2
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  missing=()
}
