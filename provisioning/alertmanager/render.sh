#!/bin/sh
# Renders Alertmanager's configuration for co2-telemetry from the ALERT_*
# variables below into OUTDIR: alertmanager.yml and co2.tmpl (the messages,
# from co2.tmpl.in). The one place receivers are configured; docker-compose.yml
# (the alertmanager service, from .env) and ops/install-server.sh (from
# /etc/co2-telemetry/alerts.env) both run it. POSIX sh: it runs in the
# prom/alertmanager image (busybox) too.
#
# Usage: render.sh OUTDIR
#
# Receivers, each optional (set = used; every one set gets every notification):
#   ALERT_EMAIL_TO            address(es) to mail, comma separated
#   ALERT_EMAIL_FROM          sender address
#   ALERT_SMTP_HOST           SMTP server host:port (587: STARTTLS)
#   ALERT_SMTP_USER           SMTP login (optional)
#   ALERT_SMTP_PASSWORD_FILE  file with its password (read by Alertmanager)
#   ALERT_SMTP_STARTTLS       true (default): refuse to send without STARTTLS
#   ALERT_SMTP_CA_FILE        CA that signed the SMTP server's certificate, when
#                             not a public one (optional)
#   ALERT_WEBHOOK_URL         any URL that takes Alertmanager's webhook JSON
#   ALERT_NTFY_URL            an ntfy topic, e.g. https://ntfy.sh/<long-random-topic>;
#                             posted with ?template=alertmanager (ntfy turns the
#                             JSON into a readable push message)
#   ALERT_NTFY_TOKEN_FILE     file with an ntfy access token (optional)
# Links in the messages:
#   ALERT_STATUS_URL          the bridge's status page (default http://localhost:9464/)
#   ALERT_GRAFANA_URL         Grafana (default http://localhost:3000/)
# Where the config will live when Alertmanager reads it (templates path):
#   ALERT_CONFIG_DIR          default: OUTDIR
# Timing (tests shorten them): ALERT_GROUP_WAIT (30s), ALERT_GROUP_INTERVAL (5m),
#   ALERT_REPEAT_INTERVAL (4h).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: render.sh OUTDIR}
[ -d "$out" ] || { echo "render.sh: $out is not a directory" >&2; exit 2; }
out=$(cd "$out" && pwd)

die() { echo "render.sh: $*" >&2; exit 2; }
# A value goes into single-quoted YAML and a sed replacement: no quotes,
# backslashes, pipes or line breaks.
safe() {
    case $2 in
        *\'* | *\"* | *\\* | *\|* | *"
"*) die "$1 must not contain quotes, backslashes, '|' or line breaks" ;;
    esac
}
for v in ALERT_EMAIL_TO ALERT_EMAIL_FROM ALERT_SMTP_HOST ALERT_SMTP_USER ALERT_SMTP_PASSWORD_FILE ALERT_SMTP_CA_FILE \
    ALERT_WEBHOOK_URL ALERT_NTFY_URL ALERT_NTFY_TOKEN_FILE ALERT_STATUS_URL ALERT_GRAFANA_URL ALERT_CONFIG_DIR; do
    val=; eval "val=\${$v:-}"
    safe "$v" "$val"
done

email_to=${ALERT_EMAIL_TO:-}
smtp_host=${ALERT_SMTP_HOST:-}
webhook=${ALERT_WEBHOOK_URL:-}
ntfy=${ALERT_NTFY_URL:-}
status_url=${ALERT_STATUS_URL:-http://localhost:9464/}
grafana_url=${ALERT_GRAFANA_URL:-http://localhost:3000/}
case $grafana_url in */) ;; *) grafana_url=$grafana_url/ ;; esac
conf_dir=${ALERT_CONFIG_DIR:-$out}
starttls=${ALERT_SMTP_STARTTLS:-true}
case $starttls in true | false) ;; *) die "ALERT_SMTP_STARTTLS is true or false, not '$starttls'" ;; esac

if [ -n "$email_to" ]; then
    [ -n "$smtp_host" ] || die "ALERT_EMAIL_TO is set: set ALERT_SMTP_HOST (host:port) too"
    [ -n "${ALERT_EMAIL_FROM:-}" ] || die "ALERT_EMAIL_TO is set: set ALERT_EMAIL_FROM too"
    case $smtp_host in *:[0-9]*) ;; *) die "ALERT_SMTP_HOST is host:port, not '$smtp_host'" ;; esac
    if [ -n "${ALERT_SMTP_USER:-}" ] && [ -z "${ALERT_SMTP_PASSWORD_FILE:-}" ]; then
        die "ALERT_SMTP_USER is set: set ALERT_SMTP_PASSWORD_FILE too"
    fi
fi
for u in "$webhook" "$ntfy"; do
    case $u in '' | http://* | https://*) ;; *) die "a webhook or ntfy URL starts with http:// or https://, not '$u'" ;; esac
done
if [ -z "$email_to$webhook$ntfy" ]; then
    echo "render.sh: WARNING: no receiver set (ALERT_EMAIL_TO, ALERT_WEBHOOK_URL, ALERT_NTFY_URL): alerts reach nobody" >&2
fi

# '&' means "the match" to sed; escape it in the links.
sed_url() { printf '%s' "$1" | sed 's/&/\\\&/g'; }
sed -e "s|@STATUS_URL@|$(sed_url "$status_url")|g" -e "s|@GRAFANA_URL@|$(sed_url "$grafana_url")|g" \
    "$here/co2.tmpl.in" >"$out/co2.tmpl.tmp"
mv -f "$out/co2.tmpl.tmp" "$out/co2.tmpl"

{
    echo "# Rendered by provisioning/alertmanager/render.sh; re-run it rather than editing this file."
    echo "global:"
    echo "  resolve_timeout: 5m"
    echo "templates:"
    echo "  - '$conf_dir/co2.tmpl'"
    echo "route:"
    echo "  receiver: co2"
    echo "  group_by: [alertname, instance]"
    echo "  group_wait: ${ALERT_GROUP_WAIT:-30s}"
    echo "  group_interval: ${ALERT_GROUP_INTERVAL:-5m}"
    echo "  repeat_interval: ${ALERT_REPEAT_INTERVAL:-4h}"
    echo "  routes:"
    echo "    # One message per device, with everything wrong with it."
    echo "    - matchers: ['device=~\".+\"']"
    echo "      group_by: [device]"
    echo "inhibit_rules:"
    echo "  # A bridge that is down, unscraped or cut off from the broker or the"
    echo "  # database makes every device look silent: say that once, not per device."
    echo "  # (Losses and queue overflows stay reported: readings are really missing.)"
    echo "  - source_matchers: ['alertname=~\"CO2BridgeDown|CO2BridgeTargetMissing|CO2BridgeMqttDisconnected|CO2BridgeDatabaseDown\"']"
    echo "    target_matchers: ['alertname=\"CO2DeviceSilent\"']"
    echo "receivers:"
    echo "  - name: co2"
    if [ -n "$email_to" ]; then
        echo "    email_configs:"
        echo "      - to: '$email_to'"
        echo "        from: '$ALERT_EMAIL_FROM'"
        echo "        smarthost: '$smtp_host'"
        echo "        require_tls: $starttls"
        if [ -n "${ALERT_SMTP_USER:-}" ]; then
            echo "        auth_username: '$ALERT_SMTP_USER'"
            echo "        auth_password_file: '$ALERT_SMTP_PASSWORD_FILE'"
        fi
        if [ -n "${ALERT_SMTP_CA_FILE:-}" ]; then
            echo "        tls_config:"
            echo "          ca_file: '$ALERT_SMTP_CA_FILE'"
        fi
        echo "        send_resolved: true"
        echo "        headers:"
        echo "          Subject: '{{ template \"co2.subject\" . }}'"
        echo "        text: '{{ template \"co2.text\" . }}'"
        echo "        html: ''"
    fi
    if [ -n "$webhook$ntfy" ]; then
        echo "    webhook_configs:"
    fi
    if [ -n "$webhook" ]; then
        echo "      - url: '$webhook'"
        echo "        send_resolved: true"
    fi
    if [ -n "$ntfy" ]; then
        case $ntfy in *\?*) sep='&' ;; *) sep='?' ;; esac
        echo "      - url: '${ntfy}${sep}template=alertmanager'"
        echo "        send_resolved: true"
        if [ -n "${ALERT_NTFY_TOKEN_FILE:-}" ]; then
            echo "        http_config:"
            echo "          authorization:"
            echo "            type: Bearer"
            echo "            credentials_file: '$ALERT_NTFY_TOKEN_FILE'"
        fi
    fi
} >"$out/alertmanager.yml.tmp"
mv -f "$out/alertmanager.yml.tmp" "$out/alertmanager.yml"
