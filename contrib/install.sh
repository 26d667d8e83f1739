#!/usr/bin/env bash
# Installs m365sync on Debian 12 as root, the way README.md "Running it under
# systemd" describes; .ci/run and tests/test_install.py run this same script, so
# the documented install is the tested one.
#
#   contrib/install.sh --directory-id GUID --application-id GUID \
#       --public-url https://pbx.example.com:8887 --pbx-url https://pbx.example.com:8887/scim/v2 \
#       --pbx-token-file FILE [--tenant contoso] [--source CHECKOUT-OR-WHEEL] [--root DIR]
#
# The five tenant values are needed only when /etc/m365sync/config.toml does not
# exist yet; an existing config (a re-run, an upgrade) is kept as it is.
# --root DIR installs into DIR instead of / (a throwaway root for tests): the
# user goes into DIR/etc/passwd, and systemctl is never run.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=/
source_path=$(dirname "$here")
tenant=contoso
directory_id= application_id= public_url= pbx_url= pbx_token_file=

die() { echo "install.sh: error: $*" >&2; exit 1; }
step() { echo "==> $*"; }

while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 needs a value"
    case $1 in
        --root) root=$2 ;;
        --source) source_path=$2 ;;
        --tenant) tenant=$2 ;;
        --directory-id) directory_id=$2 ;;
        --application-id) application_id=$2 ;;
        --public-url) public_url=$2 ;;
        --pbx-url) pbx_url=$2 ;;
        --pbx-token-file) pbx_token_file=$2 ;;
        *) die "unknown option $1 (see the comment at the top of $0)" ;;
    esac
    shift 2
done

[ "$(id -u)" = 0 ] || die "run as root (it creates a system user and root-owned files)"
case $root in /*) ;; *) die "--root must be an absolute path" ;; esac
case $root in *[!A-Za-z0-9/._-]*) die "--root may hold only letters, digits and / . _ -" ;; esac
root=${root%/}  # "" for /, so "$root/etc" is /etc
venv=/opt/m365sync                   # the unit's ExecStart
etc=$root/etc/m365sync
config=$etc/config.toml
unit=$root/etc/systemd/system/m365sync.service

guid='^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
if [ ! -e "$config" ]; then
    for pair in "directory-id:$directory_id" "application-id:$application_id" "public-url:$public_url" \
                "pbx-url:$pbx_url" "pbx-token-file:$pbx_token_file"; do
        [ -n "${pair#*:}" ] || die "--${pair%%:*} is needed for a new $config"
    done
    echo "$directory_id" | grep -Eq "$guid" || die "--directory-id is not a GUID: $directory_id"
    echo "$application_id" | grep -Eq "$guid" || die "--application-id is not a GUID: $application_id"
    echo "$tenant" | grep -Eq '^[a-z0-9][a-z0-9-]*$' || die "--tenant: lower-case letters, digits and -"
    for url in "$public_url" "$pbx_url"; do
        echo "$url" | grep -Eq '^https?://[^"\\ |&]+$' || die "not an http(s) URL without quotes, spaces, | or &: $url"
    done
    [ -s "$pbx_token_file" ] || die "--pbx-token-file $pbx_token_file is missing or empty"
fi

step "venv at $venv, m365sync from $source_path"
python3 -m venv "$root$venv"
"$root$venv/bin/pip" install --quiet --upgrade "$source_path"
"$root$venv/bin/m365sync" --version
mkdir -p "$root/usr/local/bin"
ln -sfn "$venv/bin/m365sync" "$root/usr/local/bin/m365sync"   # m365sync on admins' PATH
# The unit's Documentation=: the README of the version installed (the package's long description).
mkdir -p "$root/usr/share/doc/m365sync"
"$root$venv/bin/python" -c 'from importlib.metadata import metadata; print(metadata("m365sync").get_payload())' \
    > "$root/usr/share/doc/m365sync/README.md"

step "the m365sync user and group (systemd-sysusers)"
# Debian 12's systemd does not create /etc/sysusers.d.
mkdir -p "$root/etc/sysusers.d"
install -m 0644 "$here/systemd/m365sync.sysusers.conf" "$root/etc/sysusers.d/m365sync.conf"
systemd-sysusers --root="${root:-/}" "$root/etc/sysusers.d/m365sync.conf"
uid=$(awk -F: '$1 == "m365sync" { print $3 }' "$root/etc/passwd")
gid=$(awk -F: '$1 == "m365sync" { print $3 }' "$root/etc/group")
[ -n "$uid" ] && [ -n "$gid" ] || die "systemd-sysusers did not create the m365sync user and group"

step "$etc: config and secrets, 0640 root:m365sync in a 0750 folder"
if [ -e "$config" ]; then
    echo "$config exists: kept as it is"
else
    "$root$venv/bin/m365sync" init --dir "$etc" --group m365sync >/dev/null
    token_file=$etc/$tenant-pbx-token
    # Replace the example's values, whole lines, and make sure each one took.
    for line in "public_url = \"$public_url\"" "name = \"$tenant\"" "directory_id = \"$directory_id\"" \
                "application_id = \"$application_id\"" "scim_url = \"$pbx_url\"" "token_file = \"$token_file\""; do
        sed -i "0,/^${line%% =*} = /s|^${line%% =*} = .*|$line|" "$config"
        grep -qxF "$line" "$config" || die "could not set '$line' in $config (has config.example.toml changed?)"
    done
    install -m 0640 -o root -g "$gid" "$pbx_token_file" "$token_file"
    # init sets the group by name; under --root the group is only in $root/etc/group.
    chown root:"$gid" "$etc" "$config" "$etc/admin-token"
fi

step "the systemd unit"
install -D -m 0644 "$here/systemd/m365sync.service" "$unit"
# verify checks that ExecStart exists on this host: under --root it checks a copy
# that starts $root/opt/m365sync instead.
checked=$unit
if [ -n "$root" ]; then
    checked=$(mktemp -d)/m365sync.service
    sed "s|$venv/|$root$venv/|g" "$unit" > "$checked"
fi
verify=$(systemd-analyze verify --man=no "$checked" 2>&1) || { echo "$verify"; die "systemd-analyze verify failed"; }
[ -z "$verify" ] || { echo "$verify"; die "systemd-analyze verify is not clean"; }
[ "$checked" = "$unit" ] || rm -r "$(dirname "$checked")"
echo "systemd-analyze verify: clean"
# --offline=yes: rate the file itself; without it, security asks the running
# systemd manager, which a container or chroot does not have.
security=$(systemd-analyze security --offline=yes --threshold=20 --no-pager "$unit" 2>&1) \
    || { echo "$security"; die "systemd-analyze security: exposure above 2.0"; }
echo "systemd-analyze security: ${security##*$'\n'}"

step "check-config --strict as the m365sync user (uid $uid)"
as_daemon() { (cd / && setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$root$venv/bin/m365sync" "$@"); }
as_daemon check-config --strict --config "$config"
echo "register these redirect URIs in the tenant's Entra app:"
as_daemon redirect-uris --config "$config"

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    step "starting m365sync.service"
    systemctl daemon-reload
    systemctl enable --now m365sync.service
    systemctl --no-pager status m365sync.service | head -5
else
    echo "no running systemd here (a container, a chroot or --root): stopped before"
    echo "'systemctl daemon-reload && systemctl enable --now m365sync'; run that on the real host."
fi
echo "next: m365sync authorize --tenant $tenant   (then: m365sync status)"
