#!/usr/bin/env bash
# ops/firewall.sh for real, in two network namespaces this check creates
# ("server" and "client", joined by a veth pair, IPv4 and IPv6): listeners on
# SSH, MQTT, Grafana, MySQL, Prometheus and the bridge's metrics port in the
# server namespace; from the client only SSH, MQTT and Grafana connect; an
# open SSH connection survives; a re-run changes nothing (iptables -S); --remove
# restores the original rule set; the ufw variant (in a private mount
# namespace, so the host's /etc/ufw is untouched) gives the same reachability.
# Docker, as Docker wires it (DNAT in PREROUTING to a "container" namespace
# behind a br-* interface, FORWARD jumping to DOCKER-USER): a published port
# bypasses the INPUT rules; with DOCKER-USER handled, only the public ports
# published reach the container, the container's own connections out still
# work, a re-run changes nothing and --remove restores Docker's chains.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ops=$(cd -- "$here/.." && pwd)
# shellcheck source=../lib/check.sh
source "$ops/lib/check.sh"

echo "== 51-firewall: ops/firewall.sh in network namespaces"
for c in ip iptables ip6tables iptables-restore python3; do
    command -v "$c" >/dev/null || { echo "missing $c (apt-get install iproute2 iptables python3)"; fail "prerequisite $c"; finish; }
done
[[ $(id -u) == 0 ]] || { fail "needs root (network namespaces)"; finish; }

sfx=$(rand_suffix)
srv=co2fw-s-$sfx
cli=co2fw-c-$sfx
ctr=co2fw-d-$sfx
veth_d=br-${sfx:0:6}
veth_ctr=c2d${sfx:0:6}
D4=172.31.251.2
D4GW=172.31.251.1
veth_s=c2s${sfx:0:6}
veth_c=c2c${sfx:0:6}
S4=10.251.5.1
C4=10.251.5.2
S6=fd51:5::1
C6=fd51:5::2
work=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$srv" 2>/dev/null || true
    ip netns del "$cli" 2>/dev/null || true
    ip netns del "$ctr" 2>/dev/null || true
    rm -rf -- "$work"
}
trap cleanup EXIT

S() { ip netns exec "$srv" "$@"; }
C() { ip netns exec "$cli" "$@"; }

ip netns add "$srv"
ip netns add "$cli"
ip link add "$veth_s" type veth peer name "$veth_c"
ip link set "$veth_s" netns "$srv"
ip link set "$veth_c" netns "$cli"
S ip link set lo up
C ip link set lo up
S ip addr add "$S4/24" dev "$veth_s"
C ip addr add "$C4/24" dev "$veth_c"
S ip -6 addr add "$S6/64" dev "$veth_s" nodad
C ip -6 addr add "$C6/64" dev "$veth_c" nodad
S ip link set "$veth_s" up
C ip link set "$veth_c" up

ports=(22 2222 1883 8883 3000 3306 9090 9464 5555)
open_ports=(22 2222 1883 8883 3000)
closed_ports=(3306 9090 9464)

cat >"$work/listen.py" <<'EOF'
# Echo listeners on every given port, IPv4 and IPv6 (dual-stack sockets).
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port)); s.listen(16); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, "listen")
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.data == "listen":
            c, _ = key.fileobj.accept(); c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, "conn")
        else:
            try:
                d = key.fileobj.recv(4096)
            except OSError:
                d = b""
            if d:
                key.fileobj.sendall(d)
            else:
                sel.unregister(key.fileobj); key.fileobj.close()
EOF
cat >"$work/probe.py" <<'EOF'
# Exit 0 when HOST:PORT accepts a TCP connection within 1 s.
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), 1.0).close()
except OSError:
    sys.exit(1)
EOF
cat >"$work/hold.py" <<'EOF'
# Open a connection now, then after GO_FILE appears send a line and expect it back.
import os, socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), 2.0)
open(sys.argv[3] + ".up", "w").close()
for _ in range(600):
    if os.path.exists(sys.argv[3]): break
    time.sleep(0.05)
c.settimeout(2.0)
c.sendall(b"still here\n")
sys.exit(0 if c.recv(64) == b"still here\n" else 1)
EOF

S python3 "$work/listen.py" "${ports[@]}" >"$work/listen.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q ready "$work/listen.out" 2>/dev/null && break; sleep 0.1; done

reach() { C python3 "$work/probe.py" "$1" "$2"; }

# A pre-existing rule set the script must leave as it found it.
S iptables -A INPUT -p tcp --dport 5555 -j ACCEPT
S iptables -A INPUT -s 192.0.2.0/24 -j DROP
S ip6tables -A INPUT -p tcp --dport 5555 -j ACCEPT
S iptables -S >"$work/orig4"
S ip6tables -S >"$work/orig6"

for p in "${ports[@]}"; do
    check "before: client reaches $p over IPv4 (sanity)" reach "$S4" "$p"
done

# An SSH session that is open while the firewall goes up.
C python3 "$work/hold.py" "$S4" 22 "$work/go" &
hold_pid=$!
pids+=("$hold_pid")
for _ in $(seq 50); do [[ -e $work/go.up ]] && break; sleep 0.1; done

fw=(env SSH_CONNECTION="$C4 40000 $S4 2222" "$ops/firewall.sh" --mqtt-ports "1883,8883" --grafana-ports 3000)

S "${fw[@]}" --dry-run >"$work/dry.out" 2>&1
check "--dry-run prints the rules it would load" grep -q -- "-A CO2-INPUT -p tcp -m tcp --dport 1883 -j ACCEPT" "$work/dry.out"
check "--dry-run changes nothing" diff -u "$work/orig4" <(S iptables -S)

check "apply (first run)" S "${fw[@]}"
S iptables -S >"$work/applied4"
S ip6tables -S >"$work/applied6"
check "the INPUT chain jumps to CO2-INPUT first" grep -qx -- "-A INPUT -j CO2-INPUT" <(S iptables -S INPUT | sed -n 2p)

for p in "${open_ports[@]}"; do
    check "client reaches $p over IPv4" reach "$S4" "$p"
    check "client reaches $p over IPv6" reach "$S6" "$p"
done
for p in "${closed_ports[@]}"; do
    check_not "client cannot reach $p over IPv4" reach "$S4" "$p"
    check_not "client cannot reach $p over IPv6" reach "$S6" "$p"
done
check "the server itself still reaches 3306 on loopback" S python3 "$work/probe.py" 127.0.0.1 3306
touch "$work/go"
check "the SSH connection opened before the firewall still works" wait "$hold_pid"

S "${fw[@]}" >"$work/second.out" 2>&1
check "second run reports 0 changes" grep -qx "firewall changes: 0" "$work/second.out"
check "second run leaves iptables -S identical" diff -u "$work/applied4" <(S iptables -S)
check "second run leaves ip6tables -S identical" diff -u "$work/applied6" <(S ip6tables -S)
check "a rule appears once, not duplicated" test "$(grep -c -- '--dport 1883 -j ACCEPT' "$work/applied4")" -eq 1

# Changing the ports rewrites the chain in place (no stale rule left behind).
S env SSH_CONNECTION="$C4 40000 $S4 2222" "$ops/firewall.sh" --mqtt-ports 8883 >/dev/null 2>&1
check_not "after dropping 1883 from --mqtt-ports, 1883 is closed" reach "$S4" 1883
check "... and 8883 is still open" reach "$S4" 8883
S "${fw[@]}" >/dev/null 2>&1

check_not "a port both public and internal is refused" S "$ops/firewall.sh" --mqtt-ports 3306 --dry-run

check "--remove" S "$ops/firewall.sh" --remove
check "--remove restores the original iptables rule set" diff -u "$work/orig4" <(S iptables -S)
check "--remove restores the original ip6tables rule set" diff -u "$work/orig6" <(S ip6tables -S)
check "after --remove, 3306 is reachable again (nothing of ours left)" reach "$S4" 3306
S "$ops/firewall.sh" --remove >"$work/remove2.out" 2>&1
check "a second --remove changes nothing" grep -qx "firewall changes: 0" "$work/remove2.out"

# ---- Docker's published ports
ip netns add "$ctr"
ip link add "$veth_d" type veth peer name "$veth_ctr"
ip link set "$veth_d" netns "$srv"
ip link set "$veth_ctr" netns "$ctr"
ip netns exec "$ctr" ip link set lo up
ip netns exec "$ctr" ip addr add "$D4/24" dev "$veth_ctr"
ip netns exec "$ctr" ip link set "$veth_ctr" up
ip netns exec "$ctr" ip route add default via "$D4GW"
S ip addr add "$D4GW/24" dev "$veth_d"
S ip link set "$veth_d" up
S sysctl -qw net.ipv4.ip_forward=1
# What dockerd sets up for `ports: ["18883:18883", ...]` (the parts that matter here).
S iptables -N DOCKER-USER
S iptables -A DOCKER-USER -j RETURN
S iptables -A FORWARD -j DOCKER-USER
S iptables -t nat -A POSTROUTING -s 172.31.251.0/24 ! -o "$veth_d" -j MASQUERADE
published=(18883 13000 13306 19090)
for p in "${published[@]}"; do
    S iptables -t nat -A PREROUTING -p tcp -m tcp --dport "$p" -j DNAT --to-destination "$D4:$p"
done
ip netns exec "$ctr" python3 "$work/listen.py" "${published[@]}" >"$work/listen-ctr.out" 2>&1 &
pids+=($!)
C python3 "$work/listen.py" 7777 >"$work/listen-cli.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q ready "$work/listen-ctr.out" 2>/dev/null && grep -q ready "$work/listen-cli.out" 2>/dev/null && break; sleep 0.1; done
S iptables -S >"$work/orig4d"
S iptables -t nat -S >"$work/orig4d-nat"
S ip6tables -S >"$work/orig6d"
check "Docker emulation: the client reaches a published container port (13306)" reach "$S4" 13306

fwd=(env SSH_CONNECTION="$C4 40000 $S4 2222" "$ops/firewall.sh" --mqtt-ports "1883,8883,18883" --grafana-ports "3000,13000")
check "apply --no-docker (INPUT only)" S "${fwd[@]}" --no-docker
check "without the DOCKER-USER rules, a published port (13306) bypasses CO2-INPUT" reach "$S4" 13306
S iptables -S >"$work/before-dry-docker"
S "${fwd[@]}" --dry-run >"$work/dry-docker.out" 2>&1
check "--dry-run prints the DOCKER-USER policy it would load" \
    grep -q -- "-A CO2-DOCKER -p tcp -m conntrack --ctorigdstport 18883 --ctdir ORIGINAL -j RETURN" "$work/dry-docker.out"
check "--dry-run changes nothing (Docker case)" diff -u "$work/before-dry-docker" <(S iptables -S)
check "apply (DOCKER-USER present: handled)" S "${fwd[@]}"
check "DOCKER-USER jumps to CO2-DOCKER first" grep -qx -- "-A DOCKER-USER -j CO2-DOCKER" <(S iptables -S DOCKER-USER | sed -n 2p)
for p in 18883 13000; do
    check "client reaches the published public port $p (container)" reach "$S4" "$p"
done
for p in 13306 19090; do
    check_not "client cannot reach the published port $p (not public)" reach "$S4" "$p"
done
check "the container still opens connections out (to the client)" ip netns exec "$ctr" python3 "$work/probe.py" "$C4" 7777
check "the server itself still reaches the container's 13306" S python3 "$work/probe.py" "$D4" 13306
check_not "ip6tables has no DOCKER-USER here, so no CO2-DOCKER either" S ip6tables -S CO2-DOCKER
S iptables -S >"$work/applied4d"
S "${fwd[@]}" >"$work/second-docker.out" 2>&1
check "second run (Docker): 0 changes" grep -qx "firewall changes: 0" "$work/second-docker.out"
check "second run (Docker): iptables -S identical" diff -u "$work/applied4d" <(S iptables -S)
check "--remove (Docker)" S "$ops/firewall.sh" --remove
check "--remove restores the rule set with Docker's chains as they were" diff -u "$work/orig4d" <(S iptables -S)
check "--remove leaves Docker's NAT rules alone" diff -u "$work/orig4d-nat" <(S iptables -t nat -S)
check "after --remove, the published 13306 is reachable again (nothing of ours left)" reach "$S4" 13306

"$ops/firewall.sh" --print-cloud --mqtt-ports 1883,8883 >"$work/cloud.out"
check "--print-cloud prints the gcloud rule" grep -q -- "--rules=tcp:22,tcp:1883,tcp:8883,tcp:3000" "$work/cloud.out"
check "--print-cloud prints the AWS rules" grep -q "authorize-security-group-ingress --group-id sg-XXXXXXXX --protocol tcp --port 8883" "$work/cloud.out"
check_not "--print-cloud never opens 3306" grep -q "port 3306 " "$work/cloud.out"

# ufw variant: its state files are bind-mounted copies inside a private mount
# namespace, so only the test namespace is touched.
if command -v ufw >/dev/null && command -v unshare >/dev/null; then
    ufw_state() { cat /etc/ufw/user.rules /etc/ufw/user6.rules /etc/ufw/ufw.conf /etc/default/ufw | sha256sum; }
    host_ufw=$(ufw_state)
    mkdir -p "$work/ufw-etc"
    cp -a /etc/ufw/. "$work/ufw-etc/"
    sed 's/^IPT_SYSCTL=.*/IPT_SYSCTL=/' /etc/default/ufw >"$work/ufw-default"
    cat >"$work/ufw-run.sh" <<EOF
set -euo pipefail
mount --bind "$work/ufw-etc" /etc/ufw
mount --bind "$work/ufw-default" /etc/default/ufw
ip netns exec "$srv" "$ops/firewall.sh" --ufw --mqtt-ports 1883,8883 >"$work/ufw1.out" 2>&1
ip netns exec "$srv" "$ops/firewall.sh" --ufw --mqtt-ports 1883,8883 >"$work/ufw2.out" 2>&1
ip netns exec "$srv" iptables -S >"$work/ufw-rules"
for p in 22 1883 8883 3000 3306 9090 9464; do
    if ip netns exec "$cli" python3 "$work/probe.py" "$S4" "\$p"; then echo "\$p open"; else echo "\$p closed"; fi
done >"$work/ufw-reach"
for p in 13306 18883; do
    if ip netns exec "$cli" python3 "$work/probe.py" "$S4" "\$p"; then echo "\$p open"; else echo "\$p closed"; fi
done >"$work/ufw-reach-docker"
ip netns exec "$srv" iptables -S DOCKER-USER >"$work/ufw-docker-user"
ip netns exec "$srv" "$ops/firewall.sh" --ufw --remove --mqtt-ports 1883,8883 >"$work/ufw-rm.out" 2>&1
for p in 22 1883; do
    if ip netns exec "$cli" python3 "$work/probe.py" "$S4" "\$p"; then echo "\$p open"; else echo "\$p closed"; fi
done >"$work/ufw-reach-rm"
EOF
    check "ufw variant runs (private mount namespace)" unshare -m bash "$work/ufw-run.sh"
    check "ufw: second run reports 0 changes" grep -qx "firewall changes: 0" "$work/ufw2.out"
    for p in 22 1883 8883 3000; do
        check "ufw: client reaches $p" grep -qx "$p open" "$work/ufw-reach"
    done
    for p in 3306 9090 9464; do
        check "ufw: client cannot reach $p" grep -qx "$p closed" "$work/ufw-reach"
    done
    check "ufw: DOCKER-USER jumps to CO2-DOCKER too" grep -qx -- "-A DOCKER-USER -j CO2-DOCKER" "$work/ufw-docker-user"
    check "ufw: client cannot reach the published container ports (13306, 18883)" \
        test "$(grep -cx -e "13306 closed" -e "18883 closed" "$work/ufw-reach-docker")" == 2
    check "ufw --remove closes MQTT again" grep -qx "1883 closed" "$work/ufw-reach-rm"
    check_not "ufw --remove takes CO2-DOCKER out again" S iptables -S CO2-DOCKER
    check "ufw --remove keeps SSH open" grep -qx "22 open" "$work/ufw-reach-rm"
    check "the host's /etc/ufw was not touched" test "$host_ufw" == "$(ufw_state)"
else
    fail "ufw or unshare missing (apt-get install ufw util-linux)"
fi

finish
