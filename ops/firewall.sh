#!/usr/bin/env bash
# Host firewall for the co2-telemetry server: from outside only SSH, MQTT and
# Grafana are reachable; MySQL (3306), Prometheus (9090) and the bridge's
# metrics (9464) stay on loopback and the internal networks you name.
#
# Usage: sudo ops/firewall.sh [options]
#   (no action flag)       apply the rules (iptables + ip6tables)
#   --remove               take our rules out again (the rest of the rule set is untouched)
#   --persist              also save the result for the next boot (netfilter-persistent,
#                          or /etc/iptables/rules.v4 and rules.v6)
#   --ufw                  use ufw instead of raw iptables (for hosts that run ufw)
#   --print-cloud          print the matching GCP / AWS commands and exit
#   --dry-run              print the plan and the exact rules, change nothing
# Ports and sources (flags, or the environment variable in brackets):
#   --ssh-ports LIST       [CO2_FW_SSH_PORTS]      default 22; sshd's own ports and the
#                          port of the SSH session running this are always added
#   --mqtt-ports LIST      [CO2_FW_MQTT_PORTS]     default 8883 (TLS); e.g. 1883,8883
#   --grafana-ports LIST   [CO2_FW_GRAFANA_PORTS]  default 3000
#   --allow-tcp LIST       [CO2_FW_ALLOW_TCP]      more public TCP ports (e.g. 80,443)
#   --internal CIDR        [CO2_FW_INTERNAL]       trusted source network, all ports
#                          (repeatable; e.g. your VPC subnet, a WireGuard network)
#   --internal-if IFACE    [CO2_FW_INTERNAL_IF]    trusted interface, all ports (repeatable)
#   --internal-ports LIST  [CO2_FW_INTERNAL_PORTS] default 3306,9090,9464: refused if
#                          also listed as public; shown by --print-cloud
#   --reject               answer closed ports with a reset instead of silently dropping
#   --no-ipv6              leave ip6tables alone
#   --chain NAME           default CO2-INPUT
#   --docker / --no-docker filter Docker's published ports too (default: when Docker's
#                          DOCKER-USER chain exists; --docker creates it if missing)
#   --docker-chain NAME    default CO2-DOCKER
#   --cloud-source CIDR    source range for --print-cloud (default 0.0.0.0/0)
#
# How: every rule lives in one chain (CO2-INPUT) that INPUT jumps to first.
# The chain is replaced in one iptables-restore transaction, only when it
# differs from the wanted rules, so re-running changes nothing and there is
# never a moment with half a rule set; the jump is added only after a -C check.
# Established connections (your SSH session) are accepted before anything is
# dropped, and the SSH ports are accepted before the final drop, so applying
# this cannot lock you out. --remove deletes the jump and the chain.
#
# Docker: a port published by a container (`ports:` in docker-compose.yml) is
# DNAT'ed to the container before INPUT is consulted and then forwarded, so
# INPUT rules never see it: `3306:3306` would be open to the world whatever
# CO2-INPUT says. Docker sends forwarded traffic through the DOCKER-USER chain
# first, and leaves that chain to the admin. When it exists, a second chain
# (CO2-DOCKER, jumped to first from DOCKER-USER) applies the same policy to
# new connections from outside to published ports: the public ports, the
# trusted networks and interfaces, and the containers' own bridges pass;
# everything else published is dropped. Replies and the containers' outgoing
# connections are left alone.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

action=apply
persist=0
backend=iptables
ssh_ports=${CO2_FW_SSH_PORTS:-22}
mqtt_ports=${CO2_FW_MQTT_PORTS:-8883}
grafana_ports=${CO2_FW_GRAFANA_PORTS:-3000}
allow_tcp=${CO2_FW_ALLOW_TCP:-}
internal=${CO2_FW_INTERNAL:-}
internal_if=${CO2_FW_INTERNAL_IF:-}
internal_ports=${CO2_FW_INTERNAL_PORTS:-3306,9090,9464}
deny=drop
ipv6=1
chain=CO2-INPUT
docker=auto
docker_chain=CO2-DOCKER
cloud_source=0.0.0.0/0
while [[ $# -gt 0 ]]; do
    case $1 in
        --remove) action=remove; shift ;;
        --persist) persist=1; shift ;;
        --ufw) backend=ufw; shift ;;
        --print-cloud) action=cloud; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --ssh-ports) ssh_ports=${2:?}; shift 2 ;;
        --mqtt-ports) mqtt_ports=${2?}; shift 2 ;;
        --grafana-ports) grafana_ports=${2?}; shift 2 ;;
        --allow-tcp) allow_tcp=${2?}; shift 2 ;;
        --internal) internal+=" ${2:?}"; shift 2 ;;
        --internal-if) internal_if+=" ${2:?}"; shift 2 ;;
        --internal-ports) internal_ports=${2?}; shift 2 ;;
        --reject) deny=reject; shift ;;
        --no-ipv6) ipv6=0; shift ;;
        --chain) chain=${2:?}; shift 2 ;;
        --docker) docker=yes; shift ;;
        --no-docker) docker=no; shift ;;
        --docker-chain) docker_chain=${2:?}; shift 2 ;;
        --cloud-source) cloud_source=${2:?}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

[[ $chain =~ ^[A-Za-z0-9_-]{1,28}$ ]] || die "--chain '$chain': use up to 28 of [A-Za-z0-9_-]"
[[ $docker_chain =~ ^[A-Za-z0-9_-]{1,28}$ && $docker_chain != "$chain" ]] ||
    die "--docker-chain '$docker_chain': use up to 28 of [A-Za-z0-9_-], not the --chain name"

# ---------------------------------------------------------------- inputs
ports_of() { # LIST NAME -> validated, de-duplicated, one per line
    local p
    for p in $(split_list "$1"); do
        valid_port "$p" || die "$2: '$p' is not a TCP port (1-65535)"
        echo "$((10#$p))"
    done | awk '!seen[$0]++'
}
mapfile -t SSH < <(ports_of "$ssh_ports" --ssh-ports)
# Never lock out SSH: add the ports sshd really listens on, and the one this
# session came in on.
if [[ $action != cloud ]]; then
    if command -v sshd >/dev/null 2>&1 && is_root; then
        while read -r p; do SSH+=("$p"); done < <(sshd -T 2>/dev/null | awk '$1 == "port" {print $2}')
    fi
    if [[ -n ${SSH_CONNECTION:-} ]]; then
        p=$(awk '{print $4}' <<<"$SSH_CONNECTION")
        valid_port "$p" && SSH+=("$p")
    fi
fi
mapfile -t SSH < <(printf '%s\n' "${SSH[@]}" | awk '!seen[$0]++')
mapfile -t MQTT < <(ports_of "$mqtt_ports" --mqtt-ports)
mapfile -t GRAFANA < <(ports_of "$grafana_ports" --grafana-ports)
mapfile -t EXTRA < <(ports_of "$allow_tcp" --allow-tcp)
mapfile -t INTERNAL_PORTS < <(ports_of "$internal_ports" --internal-ports)
mapfile -t PUBLIC < <(printf '%s\n' "${SSH[@]}" "${MQTT[@]}" "${GRAFANA[@]}" "${EXTRA[@]}" | sed '/^$/d' | awk '!seen[$0]++')
[[ ${#SSH[@]} -gt 0 ]] || die "no SSH port: refusing to build a firewall that locks you out"
for p in "${INTERNAL_PORTS[@]}"; do
    for q in "${PUBLIC[@]}"; do
        [[ $p != "$q" ]] || die "port $p is both public and internal (--internal-ports); MySQL, Prometheus and metrics must not be public"
    done
done

# Trusted sources, split by family and in iptables' canonical form.
INT4=()
INT6=()
for c in $(split_list "$internal"); do
    if command -v python3 >/dev/null 2>&1; then
        c=$(python3 -c 'import ipaddress,sys; print(ipaddress.ip_network(sys.argv[1], strict=False))' "$c" 2>/dev/null) ||
            die "--internal '$c' is not a network (CIDR)"
    fi
    if [[ $c == *:* ]]; then INT6+=("$c"); else INT4+=("$c"); fi
done
mapfile -t INT_IF < <(split_list "$internal_if")
for i in "${INT_IF[@]}"; do
    [[ $i =~ ^[A-Za-z0-9_.+-]{1,15}$ ]] || die "--internal-if '$i' is not an interface name"
done

# ---------------------------------------------------------------- cloud
if [[ $action == cloud ]]; then
    tcp=$(IFS=,; echo "${PUBLIC[*]}")
    cat <<EOF
# Cloud firewall: the same policy one level up (run where the cloud CLI is set up).
# Public TCP ports: $tcp   source: $cloud_source
# Internal only (no cloud rule; do not open): $(IFS=,; echo "${INTERNAL_PORTS[*]}")

## Google Cloud (VPC firewall rule + network tag on the VM)
gcloud compute firewall-rules create co2-telemetry-ingress \\
    --network=default --direction=INGRESS --action=ALLOW \\
    --rules=$(printf 'tcp:%s,' "${PUBLIC[@]}" | sed 's/,$//') \\
    --source-ranges=$cloud_source --target-tags=co2-telemetry
gcloud compute instances add-tags INSTANCE_NAME --zone=ZONE --tags=co2-telemetry
# GCP's default network also has default-allow-ssh/rdp/icmp rules; tighten
# default-allow-ssh's source range to your own address if you can.

## AWS EC2 (security group of the instance; replace sg-XXXXXXXX)
EOF
    for p in "${PUBLIC[@]}"; do
        echo "aws ec2 authorize-security-group-ingress --group-id sg-XXXXXXXX --protocol tcp --port $p --cidr $cloud_source"
    done
    echo "# Check that nothing else is open: aws ec2 describe-security-groups --group-ids sg-XXXXXXXX"
    exit 0
fi

if [[ $DRY_RUN == 0 ]] && ! is_root; then
    die "run as root (sudo $0 ...): it changes the firewall"
fi

# ---------------------------------------------------------------- iptables
# The wanted chain, exactly as `iptables -S CHAIN` prints it.
wanted_rules() { # 4|6
    local fam=$1 p c i
    echo "-A $chain -i lo -j ACCEPT"
    # ICMP first: IPv6 neighbour discovery must never be dropped as INVALID.
    if [[ $fam == 4 ]]; then echo "-A $chain -p icmp -j ACCEPT"; else echo "-A $chain -p ipv6-icmp -j ACCEPT"; fi
    echo "-A $chain -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    echo "-A $chain -m conntrack --ctstate INVALID -j DROP"
    for p in "${PUBLIC[@]}"; do
        echo "-A $chain -p tcp -m tcp --dport $p -j ACCEPT"
    done
    for i in "${INT_IF[@]}"; do
        echo "-A $chain -i $i -j ACCEPT"
    done
    if [[ $fam == 4 ]]; then
        for c in "${INT4[@]}"; do echo "-A $chain -s $c -j ACCEPT"; done
        # DHCP client (lease renewals on cloud VMs).
        echo "-A $chain -p udp -m udp --sport 67 --dport 68 -j ACCEPT"
    else
        for c in "${INT6[@]}"; do echo "-A $chain -s $c -j ACCEPT"; done
        echo "-A $chain -s fe80::/10 -p udp -m udp --dport 546 -j ACCEPT"
    fi
    if [[ $deny == reject ]]; then
        echo "-A $chain -p tcp -j REJECT --reject-with tcp-reset"
        if [[ $fam == 4 ]]; then
            echo "-A $chain -j REJECT --reject-with icmp-port-unreachable"
        else
            echo "-A $chain -j REJECT --reject-with icmp6-port-unreachable"
        fi
    else
        echo "-A $chain -j DROP"
    fi
}

# The wanted DOCKER-USER policy, exactly as `iptables -S CHAIN` prints it.
wanted_docker_rules() { # 4|6
    local fam=$1 p c i
    echo "-A $docker_chain -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
    # Only connections to published ports are DNAT'ed; the containers' own
    # traffic (outgoing, between containers) is Docker's business.
    echo "-A $docker_chain -m conntrack ! --ctstate DNAT -j RETURN"
    echo "-A $docker_chain -i docker0 -j RETURN"
    echo "-A $docker_chain -i br-+ -j RETURN"
    for i in "${INT_IF[@]}"; do echo "-A $docker_chain -i $i -j RETURN"; done
    if [[ $fam == 4 ]]; then
        for c in "${INT4[@]}"; do echo "-A $docker_chain -s $c -j RETURN"; done
    else
        for c in "${INT6[@]}"; do echo "-A $docker_chain -s $c -j RETURN"; done
    fi
    for p in "${PUBLIC[@]}"; do
        echo "-A $docker_chain -p tcp -m conntrack --ctorigdstport $p --ctdir ORIGINAL -j RETURN"
    done
    if [[ $deny == reject ]]; then
        echo "-A $docker_chain -p tcp -j REJECT --reject-with tcp-reset"
    fi
    echo "-A $docker_chain -j DROP"
}

families() {
    echo 4
    if [[ $ipv6 == 1 ]]; then
        if ! command -v ip6tables >/dev/null 2>&1; then
            warn "ip6tables not found: IPv6 left alone (apt-get install iptables, or --no-ipv6)"
        elif [[ ! -e /proc/net/if_inet6 ]]; then
            warn "IPv6 is disabled in this kernel: ip6tables left alone"
        else
            echo 6
        fi
    fi
}

ipt() { # FAMILY args...
    local fam=$1
    shift
    if [[ $fam == 4 ]]; then iptables -w 5 "$@"; else ip6tables -w 5 "$@"; fi
}
ipt_name() { if [[ $1 == 4 ]]; then echo iptables; else echo ip6tables; fi; }

apply_family() {
    local fam=$1 cmd
    cmd=$(ipt_name "$fam")
    load_chain "$fam" "$chain" "$(wanted_rules "$fam")"
    if ipt "$fam" -C INPUT -j "$chain" >/dev/null 2>&1; then
        ok "$cmd: INPUT jumps to $chain"
    else
        change "$cmd: jump from INPUT to $chain as the first rule"
        run "$cmd" -w 5 -I INPUT 1 -j "$chain"
    fi
}

# load_chain FAMILY CHAIN WANTED: replace CHAIN with WANTED in one transaction
# when it differs (creating it if missing).
load_chain() {
    local fam=$1 name=$2 wanted=$3 cmd current line
    cmd=$(ipt_name "$fam")
    if ipt "$fam" -S "$name" >/dev/null 2>&1; then
        current=$(ipt "$fam" -S "$name" | grep -v -- "^-N $name\$" || true)
    else
        current=
        change "$cmd: create chain $name"
        run "$cmd" -w 5 -N "$name"
    fi
    if [[ $current == "$wanted" ]]; then
        ok "$cmd: chain $name already as wanted ($(wc -l <<<"$wanted") rules)"
        return 0
    fi
    change "$cmd: load chain $name in one transaction ($(wc -l <<<"$wanted") rules):"
    while IFS= read -r line; do printf '          | %s\n' "$line"; done <<<"$wanted"
    if [[ $DRY_RUN == 0 ]]; then
        { printf '*filter\n:%s - [0:0]\n' "$name"; printf '%s\n' "$wanted"; printf 'COMMIT\n'; } |
            "${cmd}-restore" -w 5 --noflush ||
            die "$cmd-restore refused the rules for $name (nothing was changed); is the kernel's netfilter (conntrack) available?"
    fi
}

# Docker's published ports: CO2-DOCKER, jumped to first from DOCKER-USER.
apply_docker_family() {
    local fam=$1 cmd
    cmd=$(ipt_name "$fam")
    [[ $docker != no ]] || return 0
    if ! ipt "$fam" -S DOCKER-USER >/dev/null 2>&1; then
        if [[ $docker == auto ]]; then
            ok "$cmd: no DOCKER-USER chain (Docker not running here): published container ports not filtered (--docker adds the chain before Docker starts)"
            return 0
        fi
        # Docker keeps an existing DOCKER-USER and jumps to it from FORWARD.
        change "$cmd: create chain DOCKER-USER (Docker jumps to it from FORWARD when it starts)"
        run "$cmd" -w 5 -N DOCKER-USER
    fi
    load_chain "$fam" "$docker_chain" "$(wanted_docker_rules "$fam")"
    if [[ $(ipt "$fam" -S DOCKER-USER 2>/dev/null | sed -n 2p) == "-A DOCKER-USER -j $docker_chain" ]]; then
        ok "$cmd: DOCKER-USER jumps to $docker_chain first"
    else
        if ipt "$fam" -C DOCKER-USER -j "$docker_chain" >/dev/null 2>&1; then
            change "$cmd: move the jump DOCKER-USER -> $docker_chain to the top"
            run "$cmd" -w 5 -D DOCKER-USER -j "$docker_chain"
        fi
        change "$cmd: jump from DOCKER-USER to $docker_chain as the first rule"
        run "$cmd" -w 5 -I DOCKER-USER 1 -j "$docker_chain"
    fi
}

# remove_chain FAMILY FROM CHAIN [quiet]: delete the jumps FROM -> CHAIN, then CHAIN.
remove_chain() {
    local fam=$1 from=$2 name=$3 quiet=${4:-} cmd n=0
    cmd=$(ipt_name "$fam")
    while ipt "$fam" -C "$from" -j "$name" >/dev/null 2>&1; do
        change "$cmd: delete the jump $from -> $name"
        run "$cmd" -w 5 -D "$from" -j "$name"
        n=$((n + 1))
        [[ $DRY_RUN == 0 && $n -lt 20 ]] || break
    done
    if ipt "$fam" -S "$name" >/dev/null 2>&1; then
        change "$cmd: flush and delete chain $name"
        run "$cmd" -w 5 -F "$name"
        run "$cmd" -w 5 -X "$name"
    elif [[ -z $quiet ]]; then
        ok "$cmd: no chain $name"
    fi
}

remove_docker_family() { remove_chain "$1" DOCKER-USER "$docker_chain" quiet; }

remove_family() { remove_chain "$1" INPUT "$chain"; }

persist_rules() {
    step "persist"
    if command -v netfilter-persistent >/dev/null 2>&1; then
        change "save the current rule set for the next boot"
        run netfilter-persistent save
    elif [[ -d /etc/iptables ]]; then
        change "save the current rule set to /etc/iptables/rules.v4 and rules.v6"
        if [[ $DRY_RUN == 1 ]]; then
            info "          + iptables-save > /etc/iptables/rules.v4; ip6tables-save > /etc/iptables/rules.v6"
        else
            iptables-save >/etc/iptables/rules.v4
            ! command -v ip6tables-save >/dev/null || ip6tables-save >/etc/iptables/rules.v6
        fi
    else
        die "nothing restores saved rules at boot here: apt-get install iptables-persistent, then run again with --persist"
    fi
}

# ---------------------------------------------------------------- ufw
ufw_apply() {
    local p out c
    require_cmd ufw
    ufw_rule() { # description, ufw args...
        local what=$1
        shift
        if [[ $DRY_RUN == 1 ]]; then
            if ufw show added 2>/dev/null | grep -qxF "ufw $*"; then ok "ufw: $what"; else change "ufw: $what"; run ufw "$@"; fi
            return 0
        fi
        out=$(ufw "$@" 2>&1) || die "ufw $* failed: $out"
        if grep -q 'Skipping' <<<"$out" && ! grep -q 'Rule added\|Rule updated' <<<"$out"; then
            ok "ufw: $what"
        else
            change "ufw: $what"
            printf '          + %s\n' "$(show_cmd ufw "$@")"
        fi
    }
    # SSH first: enabling ufw must never come before the SSH rule.
    for p in "${SSH[@]}"; do ufw_rule "allow SSH $p/tcp" allow "$p/tcp" comment co2-telemetry-ssh; done
    for p in "${MQTT[@]}"; do ufw_rule "allow MQTT $p/tcp" allow "$p/tcp" comment co2-telemetry-mqtt; done
    for p in "${GRAFANA[@]}"; do ufw_rule "allow Grafana $p/tcp" allow "$p/tcp" comment co2-telemetry-grafana; done
    for p in "${EXTRA[@]}"; do ufw_rule "allow $p/tcp" allow "$p/tcp" comment co2-telemetry-extra; done
    for c in "${INT4[@]}" "${INT6[@]}"; do ufw_rule "allow from internal $c" allow from "$c" comment co2-telemetry-internal; done
    for i in "${INT_IF[@]}"; do ufw_rule "allow in on $i" allow in on "$i" comment co2-telemetry-internal; done
    if grep -q '^DEFAULT_INPUT_POLICY="DROP"' /etc/default/ufw 2>/dev/null; then
        ok "ufw: default deny incoming"
    else
        change "ufw: default deny incoming"
        run ufw default deny incoming
    fi
    if ufw status 2>/dev/null | grep -q '^Status: active'; then
        ok "ufw: active"
    else
        change "ufw: enable"
        run ufw --force enable
    fi
}

ufw_remove() {
    local p c
    require_cmd ufw
    ufw_del() {
        local out
        if [[ $DRY_RUN == 1 ]]; then change "ufw: delete $*"; run ufw delete "$@"; return 0; fi
        out=$(ufw delete "$@" 2>&1) || true
        if grep -q 'Rule deleted' <<<"$out"; then change "ufw: delete $*"; else ok "ufw: no rule $*"; fi
    }
    for p in "${MQTT[@]}" "${GRAFANA[@]}" "${EXTRA[@]}"; do ufw_del allow "$p/tcp"; done
    for c in "${INT4[@]}" "${INT6[@]}"; do ufw_del allow from "$c"; done
    for i in "${INT_IF[@]}"; do ufw_del allow in on "$i"; done
    info "  (SSH rules and ufw itself are left on: removing them could lock you out)"
}

# ---------------------------------------------------------------- main
step "firewall ($backend): public TCP ${PUBLIC[*]}; internal only ${INTERNAL_PORTS[*]}${INT4[*]:+; trusted ${INT4[*]}}${INT6[*]:+ ${INT6[*]}}${INT_IF[*]:+; trusted interfaces ${INT_IF[*]}}"
if [[ $backend == ufw ]]; then
    if [[ $action == apply ]]; then ufw_apply; else ufw_remove; fi
    # ufw leaves DOCKER-USER alone, and Docker's ports bypass ufw's chains too.
    if [[ $docker != no ]] && command -v iptables >/dev/null 2>&1; then
        for fam in $(families); do
            if [[ $action == apply ]]; then apply_docker_family "$fam"; else remove_docker_family "$fam"; fi
        done
    fi
else
    require_cmd iptables iptables-restore
    if command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | grep -q '^Status: active'; then
        die "ufw is active on this host: use --ufw (two tools editing one rule set end badly)"
    fi
    if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then
        die "firewalld is running: open the ports with firewall-cmd instead"
    fi
    for fam in $(families); do
        if [[ $action == apply ]]; then
            apply_family "$fam"
            apply_docker_family "$fam"
        else
            remove_docker_family "$fam"
            remove_family "$fam"
        fi
    done
    [[ $persist == 0 ]] || persist_rules
    if [[ $persist == 0 && $action == apply && $DRY_RUN == 0 ]]; then
        info "  (not saved: rules last until reboot; add --persist to keep them)"
    fi
fi
printf '\n'
if [[ $DRY_RUN == 1 ]]; then
    info "dry run: $CHANGES change(s) planned, nothing was changed"
else
    info "firewall changes: $CHANGES"
fi
