#!/usr/bin/env python3
"""House rules for docker-compose.yml, .env.example, Dockerfile and .dockerignore,
and a dry run of the two setup scripts the compose file inlines.

    compose_check.py --config RESOLVED.yml --env-file ENV
        RESOLVED.yml: output of `docker-compose --env-file ENV -f docker-compose.yml config`
        ENV: the filled copy of .env.example it was made with

Static: services, ports (only MQTT over TLS and Grafana published on all
interfaces by default; plain MQTT on loopback), hardening (cap_drop ALL, only
the listed capabilities added back, no-new-privileges, a memory limit on every
service), health checks, named volumes for state, dependency order, the
bridge and the ACL one-shot sharing one set of MQTT settings, Grafana security
settings, every ${VAR} of the Grafana provisioning defined, .env.example
complete and secret-free, Dockerfile/.dockerignore rules.
Live (no Docker needed):
  - the mosquitto-acl service's script, run with the bridge binary when built,
    prints the ACL for the bridge's settings;
  - the mosquitto service's start script, with paths moved into a temp dir (owned
    by the mosquitto user, as in the image), renders provisioning/mosquitto/*.in
    into a config a real local Mosquitto 2 runs with (bridge, plain and TLS
    listener on free loopback ports), as root limited to the service's cap_add
    and no-new-privileges (setpriv), and the compose health check command (a
    subscribe as the bridge user on the bridge's listener) succeeds against it;
    without certificates and with MQTT_BIND=0.0.0.0 it prints both warnings;
  - the mysql-users service's script, with no capabilities, runs
    provisioning/mysql/apply.sh against the local MariaDB (throwaway database and
    account names), giving the bridge SELECT/INSERT/UPDATE and Grafana SELECT;
    then everything is dropped;
  - the bridge's and bridge-migrate's CO2_BRIDGE__* environment passes
    `co2-bridge check-config` when the binary is built.
Prints ok/FAIL lines and "N passed, M failed"; exits 1 on any failure.
"""

import argparse
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

import obslib

REPO = obslib.REPO
EXPECTED_SERVICES = {"mosquitto-acl", "mosquitto", "mysql", "mysql-users", "bridge-migrate", "mysql-grants", "bridge",
                     "prometheus", "alertmanager", "grafana", "influxdb"}
# Secrets of optional features (alert receivers): empty in .env.example and
# defaulting to empty, where every other secret is required (${VAR:?...}).
OPTIONAL_SECRETS = {"ALERT_SMTP_PASSWORD", "ALERT_NTFY_TOKEN"}
# Services that start only when their profile is asked for.
PROFILED = {"influxdb": "influxdb"}
# Published on every interface by default: MQTT over TLS and Grafana, nothing else.
PUBLIC_PORTS = {8883, 3000}
# Capabilities a service may add back after cap_drop ALL: the images that start
# as root, prepare their files and switch user.
ROOT_THEN_USER = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"}
CAPS = {"mosquitto": ROOT_THEN_USER, "mysql": ROOT_THEN_USER}
BRIDGE_LISTENER = 1884
STATE = {"mosquitto": "/mosquitto/data", "mysql": "/var/lib/mysql", "prometheus": "/prometheus",
         "grafana": "/var/lib/grafana", "influxdb": "/var/lib/influxdb", "alertmanager": "/alertmanager"}
# The bridge's top-level config sections, as bridge.example.toml documents
# them (every key, commented): an environment variable must name one.
BRIDGE_SECTIONS = {
    m.group(1).upper()
    for m in re.finditer(r"^#? ?\[\[?([a-z_0-9]+)[.\]]",
                         (Path(__file__).resolve().parents[3] / "bridge" / "bridge.example.toml").read_text(),
                         re.M)
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ports_of(svc):
    """[(host_ip, published, target)] from short or long port syntax."""
    out = []
    for p in svc.get("ports", []) or []:
        if isinstance(p, dict):
            out.append((p.get("host_ip", "0.0.0.0"), int(p["published"]), int(p["target"])))
            continue
        parts = str(p).split("/")[0].split(":")
        if len(parts) == 3:
            out.append((parts[0] or "0.0.0.0", int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            out.append(("0.0.0.0", int(parts[0]), int(parts[1])))
        else:
            out.append(("0.0.0.0", None, int(parts[0])))
    return out


def script_of(svc):
    cmd = svc.get("command")
    text = cmd[0] if isinstance(cmd, list) else cmd
    return text.replace("$$", "$")  # compose's escape, still present in `config` output


def static_checks(c, cfg, env):
    services = cfg.get("services", {})
    c.check(set(services) == EXPECTED_SERVICES, f"services: {sorted(services)}",
            f"expected {sorted(EXPECTED_SERVICES)}")
    for name, svc in sorted(services.items()):
        for host_ip, published, target in ports_of(svc):
            public = host_ip in ("0.0.0.0", "::", "")
            if published in PUBLIC_PORTS:
                c.ok(f"{name}: port {published} published ({host_ip or 'all'})")
            else:
                c.check(not public and host_ip.startswith("127."),
                        f"{name}: port {published}->{target} bound to loopback only ({host_ip})")
        c.check(svc.get("cap_drop") == ["ALL"], f"{name}: cap_drop: [ALL]", svc.get("cap_drop"))
        added = set(svc.get("cap_add") or [])
        c.check(added <= CAPS.get(name, set()), f"{name}: adds back only {sorted(added) or 'no capability'}",
                f"allowed: {sorted(CAPS.get(name, set()))}")
        c.check("no-new-privileges:true" in (svc.get("security_opt") or []), f"{name}: no-new-privileges",
                svc.get("security_opt"))
        c.check(bool(svc.get("mem_limit")), f"{name}: memory limit ({svc.get('mem_limit')})")
        long_running = svc.get("restart") in ("always", "unless-stopped", "on-failure")
        if long_running:
            c.check(bool((svc.get("healthcheck") or {}).get("test")), f"{name}: has a health check")
        else:
            c.check(svc.get("restart") == "no", f"{name}: one-shot service (restart: no)")
        if name in STATE:
            vols = [str(v) for v in svc.get("volumes", []) or []]
            named = [v for v in vols if not v.startswith(("/", ".")) and v.split(":")[1] == STATE[name]]
            c.check(bool(named), f"{name}: {STATE[name]} on a named volume", vols)
        for v in svc.get("volumes", []) or []:
            src = str(v).split(":")[0]
            if src.startswith(str(REPO)):
                c.check(Path(src).exists(), f"{name}: mounted {Path(src).relative_to(REPO)} exists")
    c.check("ports" not in services.get("mysql", {}), "mysql: no published port")
    for name, profile in PROFILED.items():
        c.check(services.get(name, {}).get("profiles") == [profile], f"{name}: only under the {profile!r} profile")
    c.check("ports" not in services.get("influxdb", {}), "influxdb: no published port")
    ienv = services.get("influxdb", {}).get("environment", {}) or {}
    c.check(str(ienv.get("INFLUXDB_HTTP_AUTH_ENABLED")).lower() == "true"
            and str(ienv.get("INFLUXDB_REPORTING_DISABLED")).lower() == "true",
            "influxdb: authentication on, usage reporting off")
    c.check("ports" not in services.get("bridge", {}), "bridge: /metrics not published on the host")
    top_vols = set((cfg.get("volumes") or {}).keys())
    c.check(top_vols >= {"mosquitto-data", "mysql-data", "prometheus-data", "grafana-data"},
            f"named volumes declared: {sorted(top_vols)}")

    def dep(a, b, cond):
        got = ((services.get(a, {}).get("depends_on") or {}).get(b) or {}).get("condition")
        c.check(got == cond, f"{a} waits for {b}: {cond}", f"got {got}")

    dep("mosquitto", "mosquitto-acl", "service_completed_successfully")
    dep("mysql-users", "mysql", "service_healthy")
    dep("bridge-migrate", "mysql-users", "service_completed_successfully")
    dep("mysql-grants", "bridge-migrate", "service_completed_successfully")
    dep("bridge", "mysql-grants", "service_completed_successfully")
    dep("bridge", "mosquitto", "service_healthy")
    dep("grafana", "mysql-users", "service_completed_successfully")

    bridge = services.get("bridge", {})
    benv = bridge.get("environment", {}) or {}
    aenv = services.get("mosquitto-acl", {}).get("environment", {}) or {}
    mqtt_keys = {k: v for k, v in benv.items() if k.startswith("CO2_BRIDGE__MQTT__") and "PASSWORD" not in k}
    c.check(mqtt_keys and all(aenv.get(k) == v for k, v in mqtt_keys.items()),
            "mosquitto-acl derives the ACL from the bridge's own MQTT settings", f"bridge {mqtt_keys}, acl {aenv}")
    c.check(not any("PASSWORD" in k for k in aenv), "mosquitto-acl gets no secret")
    c.check(str(benv.get("CO2_BRIDGE__MQTT__PORT")) == str(BRIDGE_LISTENER),
            f"the bridge connects to the broker's bridge listener ({BRIDGE_LISTENER}), where its client ids are kept")
    mosq = services.get("mosquitto", {})
    c.check(f"-p {BRIDGE_LISTENER} " in str((mosq.get("healthcheck") or {}).get("test")),
            "the broker's health check uses the bridge listener (on 1883/8883 its id would become the user name)")
    c.check(all(t != BRIDGE_LISTENER for _, _, t in ports_of(mosq)), "the bridge listener is not published")
    c.check(benv.get("CO2_BRIDGE__HTTP__LISTEN", "").endswith(":9464"), "bridge listens on :9464 for Prometheus")
    targets = obslib.load_yaml(obslib.PROM_DIR / "targets" / "co2-bridge.yml")
    c.check(any("bridge:9464" in t.get("targets", []) for t in targets), "Prometheus scrapes bridge:9464")
    for svc_name in ("bridge", "bridge-migrate", "mosquitto-acl"):
        for key in (services.get(svc_name, {}).get("environment") or {}):
            if key.startswith("CO2_BRIDGE__"):
                c.check(key.split("__")[1] in BRIDGE_SECTIONS, f"{svc_name}: {key} names a config section")
    c.check("co2_bridge@" in benv.get("CO2_BRIDGE__DATABASE__URL", ""),
            "bridge runs with the DML-only account co2_bridge")
    c.check(str(benv.get("CO2_BRIDGE__DATABASE__MIGRATE_ON_START")).lower() == "false",
            "bridge does not migrate on start (bridge-migrate does, as admin)")
    c.check("root@" in (services.get("bridge-migrate", {}).get("environment") or {}).get("CO2_BRIDGE__DATABASE__URL", ""),
            "bridge-migrate uses the admin account")
    c.check(script_of(services.get("bridge-migrate", {"command": [""]})) == "migrate"
            or services.get("bridge-migrate", {}).get("command") == ["migrate"], "bridge-migrate runs `migrate`")

    genv = services.get("grafana", {}).get("environment", {}) or {}
    pw = str(genv.get("GF_SECURITY_ADMIN_PASSWORD", ""))
    c.check(pw and pw != "admin" and pw == env.get("GRAFANA_ADMIN_PASSWORD"),
            "grafana: admin password comes from .env (no default)")
    c.check(str(genv.get("GF_AUTH_ANONYMOUS_ENABLED")).lower() == "false", "grafana: anonymous access off")
    c.check(str(genv.get("GF_USERS_ALLOW_SIGN_UP")).lower() == "false", "grafana: sign-up off")
    home = genv.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", "")
    c.check((REPO / "grafana" / "dashboards" / Path(home).name).exists(), f"grafana: home dashboard {home} exists")
    for path in sorted(obslib.GRAFANA_PROV.rglob("*.y*ml")):
        text = "\n".join(ln.split("#", 1)[0] for ln in path.read_text().splitlines())  # values, not comments
        used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", text))
        missing = sorted(used - set(genv))
        c.check(not missing, f"grafana env defines the variables of {path.relative_to(REPO)}: {sorted(used)}",
                f"missing: {missing}")


def env_example_checks(c):
    example = (REPO / ".env.example").read_text()
    keys = dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", example, re.M))
    compose = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", compose))
    c.check(used <= set(keys), f".env.example lists every variable docker-compose.yml uses ({len(used)})",
            f"missing: {sorted(used - set(keys))}")
    secret_keys = [k for k in keys if "PASSWORD" in k or "SECRET" in k or "TOKEN" in k]
    c.check(secret_keys and all(keys[k] == "" for k in secret_keys),
            f".env.example has no secret values ({', '.join(secret_keys)} empty)")
    for k in secret_keys:
        if k in OPTIONAL_SECRETS:
            c.check(re.search(r"\$\{" + k + r":-\}", compose) is not None,
                    f"docker-compose.yml: {k} is optional (an alert receiver's)")
            continue
        c.check(re.search(r"\$\{" + k + r":\?", compose) is not None,
                f"docker-compose.yml refuses to start without {k}")
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", ".env"], capture_output=True, text=True,
                             check=False).stdout.strip()
    c.check(tracked == "", ".env is not committed")


def docker_checks(c):
    df = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", df, re.M | re.I)
    c.check(len(froms) >= 2, f"Dockerfile is multi-stage: {[f[0] for f in froms]}")
    c.check(froms and froms[0][0].startswith("rust:1-bookworm"), "Dockerfile builds on rust:1-bookworm")
    c.check(froms and froms[-1][0] in ("debian:bookworm-slim",) or froms[-1][0].startswith("gcr.io/distroless/"),
            f"Dockerfile runs on a slim base ({froms[-1][0] if froms else None})")
    final = df[df.rfind("\nFROM"):]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    c.check(users and users[-1].split(":")[0] not in ("0", "root"), f"final stage runs as non-root ({users})")
    c.check(re.search(r"cargo build --release --locked -p co2-bridge", df) is not None,
            "Dockerfile builds -p co2-bridge --release --locked")
    c.check(re.search(r'ENTRYPOINT \["/usr/local/bin/co2-bridge"\]', df) is not None, "entrypoint is co2-bridge")
    ignore = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    for must in ("target", ".git", ".env"):
        c.check(must in ignore, f".dockerignore excludes {must}")
    r = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
                       cwd=REPO, capture_output=True, text=True, check=False)
    if c.check(r.returncode == 0, "cargo metadata (the workspace resolves)", r.stderr[-1500:]):
        import json  # noqa: PLC0415

        meta = json.loads(r.stdout)
        members = [Path(p["manifest_path"]).parent.relative_to(REPO) for p in meta["packages"]]
        excluded = [str(m) for m in members if str(m).split("/")[0] in ignore]
        c.check(not excluded, f".dockerignore keeps every workspace member ({', '.join(map(str, members))})",
                f"excluded: {excluded}")
        bins = [t["name"] for p in meta["packages"] if p["name"] == "co2-bridge"
                for t in p["targets"] if "bin" in t["kind"]]
        c.check("co2-bridge" in bins, "package co2-bridge has the binary co2-bridge")
        for path in ("Cargo.toml", "Cargo.lock"):
            c.check(path not in ignore, f".dockerignore keeps {path}")


def bridge_binary():
    """The built co2-bridge with the `acl` command, or None."""
    binary = Path(os.environ.get("CO2_BRIDGE_BIN") or REPO / "target" / "debug" / "co2-bridge")
    if not binary.exists():
        return None
    r = subprocess.run([str(binary), "--help"], capture_output=True, text=True, check=False)
    return binary if " acl " in r.stdout or "\n  acl" in r.stdout else None


def limited_to(caps):
    """setpriv prefix: root limited to CAPS (cap_drop ALL + cap_add), no-new-privileges."""
    bounding = ",".join(["-all"] + [f"+{cap.lower()}" for cap in sorted(caps)])
    return ["setpriv", f"--bounding-set={bounding}", "--no-new-privs", "--"]


def mosquitto_acl_live(c, cfg, acl_dir):
    """Runs the mosquitto-acl one-shot's script; returns True when it wrote routes.acl."""
    svc = cfg["services"]["mosquitto-acl"]
    binary = bridge_binary()
    if binary is None:
        print("note: co2-bridge with `acl` not built; the ACL one-shot is not run, a minimal ACL stands in")
        (acl_dir / "routes.acl").write_text("user co2-bridge\ntopic read co2/+/emissions\n")
        return False
    env = {k: v for k, v in os.environ.items() if not k.startswith("CO2_BRIDGE")}
    env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
    script = script_of(svc).replace("/acl/", f"{acl_dir}/").replace("co2-bridge acl", f"{binary} acl")
    r = subprocess.run(limited_to(svc.get("cap_add") or []) + ["/bin/bash", "-euc", script], env=env,
                       capture_output=True, text=True, check=False, cwd=tempfile.gettempdir())
    text = (acl_dir / "routes.acl").read_text() if (acl_dir / "routes.acl").exists() else ""
    c.check(r.returncode == 0 and "pattern write co2/%u/emissions" in text and "user co2-bridge" in text,
            "mosquitto-acl (no capabilities) prints the ACL for the bridge's settings", r.stderr[-1500:] + text)
    return True


def run_mosquitto_script(svc, script, env, log_path):
    """The start script as the container runs it: root with only the service's capabilities."""
    log = open(log_path, "w")  # noqa: SIM115
    return subprocess.Popen(limited_to(svc.get("cap_add") or []) + ["/bin/sh", "-eu", "-c", script], env=env,
                            stdout=log, stderr=subprocess.STDOUT)



def relocate(script, root, certs, acl_dir, ports):
    """The mosquitto start script with every container path and port moved for a test."""
    s = script
    s = s.replace("/co2/provisioning/mosquitto", str(REPO / "provisioning" / "mosquitto"))
    s = s.replace("/co2/acl/", f"{acl_dir}/")
    s = s.replace("/mosquitto/", f"{root}/").replace("/certs/", f"{certs}/")
    s = s.replace("|1884|", f"|{ports['bridge']}|").replace("|1883|", f"|{ports['plain']}|")
    s = s.replace("|8883|", f"|{ports['tls']}|")
    for key in ("BRIDGE_BIND", "MQTT_BIND", "MQTTS_BIND"):
        s = s.replace(f"s|@{key}@||", f"s|@{key}@|127.0.0.1|")
    return s.replace("exec /usr/sbin/mosquitto", "exec mosquitto")


def image_like_tree(tmp):
    """/mosquitto/{config,data} owned by the mosquitto user, as in eclipse-mosquitto."""
    root = tmp / "mosquitto"
    (root / "config").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.chown(root, "mosquitto", "mosquitto")
    for d in ("config", "data"):
        shutil.chown(root / d, "mosquitto", "mosquitto")
    return root


def mosquitto_live(c, cfg):
    svc = cfg["services"]["mosquitto"]
    script = script_of(svc)
    env = dict(os.environ)
    env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
    health = svc["healthcheck"]["test"]
    health_cmd = health[1] if health[0] == "CMD-SHELL" else None
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        c.fail("mosquitto binary for the live config test (apt-get install mosquitto)")
        return
    tmp = Path(tempfile.mkdtemp(prefix="co2-compose-mosq-"))
    proc = None
    try:
        tmp.chmod(0o755)  # Mosquitto drops to user mosquitto and must reach its files
        acl_dir = tmp / "acl"
        acl_dir.mkdir()
        mosquitto_acl_live(c, cfg, acl_dir)
        root = image_like_tree(tmp)
        # A shared topic granted to one device, as docs/observability.md shows.
        grant = "user old-pi\ntopic write co2/emissions\n"
        (root / "data" / "co2-telemetry-devices.acl").write_text(grant)
        certs = tmp / "certs"
        certs.mkdir()
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-subj", "/CN=localhost", "-keyout", str(certs / "server.key"),
                            "-out", str(certs / "server.crt")], capture_output=True, text=True, check=False)
        c.check(r.returncode == 0, "self-signed test certificate for the TLS branch", r.stderr)
        ports = {"bridge": free_port(), "plain": free_port(), "tls": free_port()}
        s = relocate(script, root, certs, acl_dir, ports)
        c.check(str(root) in s and "/mosquitto/" not in s.replace(str(root), "") and "/co2/acl" not in s,
                "mosquitto start script: every container path relocated for the test")
        log_path = tmp / "mosquitto.log"
        proc = run_mosquitto_script(svc, s, env, log_path)
        ok = False
        deadline = time.time() + 15
        hc = (health_cmd or "").replace(f"-p {BRIDGE_LISTENER}", f"-p {ports['bridge']}")
        while time.time() < deadline and proc.poll() is None:
            r = subprocess.run(["/bin/sh", "-c", hc.replace("$$", "$")], env=env, capture_output=True,
                               text=True, check=False)
            if r.returncode == 0:
                ok = True
                break
            time.sleep(0.5)
        rendered = root / "config" / "co2-telemetry.conf"
        text = rendered.read_text() if rendered.exists() else ""
        c.check(rendered.exists() and "@" not in re.sub(r"#.*", "", text),
                "mosquitto start script renders every @PLACEHOLDER@", text[:2000])
        c.check("allow_anonymous false" in text and f"listener {ports['tls']}" in text,
                "rendered config: no anonymous access, TLS listener when certificates are present")
        listeners = re.split(r"^listener ", re.sub(r"#.*", "", text), flags=re.M)[1:]
        by_port = {int(block.split()[0]): "use_username_as_clientid true" in block for block in listeners}
        c.check(by_port == {ports["bridge"]: False, ports["plain"]: True, ports["tls"]: True},
                "rendered config: client id = user name on 1883 and 8883, ids kept on the bridge's 1884", by_port)
        acl_text = (root / "config" / "co2-telemetry.acl").read_text() if (root / "config" / "co2-telemetry.acl").exists() else ""
        c.check(acl_text.startswith((acl_dir / "routes.acl").read_text()) and acl_text.endswith(grant),
                "the broker's ACL is mosquitto-acl's, then the devices' grants from the data volume", acl_text)
        log_text = log_path.read_text()
        c.check(ok, "Mosquitto runs the rendered config (root with only cap_add, no-new-privileges) "
                "and the compose health check passes", log_text[-3000:])
        c.check("WARNING" not in log_text, "no warning with certificates and plain MQTT on loopback (the defaults)",
                log_text[-1500:])
        if ok:
            r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(ports["plain"]), "-t",
                                "co2/x/emissions", "-m", "2020-01-01 00:00:00|1", "-i", f"co2-anon-{os.getpid()}"],
                               capture_output=True, text=True, check=False, timeout=15)
            c.check(r.returncode != 0, "anonymous publish refused", r.stdout + r.stderr)
            r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{ports['tls']}", "-brief"],
                               input="", capture_output=True, text=True, check=False, timeout=15)
            c.check("CONNECTION ESTABLISHED" in (r.stdout + r.stderr) or "Protocol version" in (r.stdout + r.stderr),
                    "TLS listener answers a TLS handshake", (r.stdout + r.stderr)[-1500:])
        obslib.stop_process(proc)
        proc = None
        # No certificates and plain MQTT on every interface: both said loudly.
        for f in certs.iterdir():
            f.unlink()
        ports = {"bridge": free_port(), "plain": free_port(), "tls": free_port()}
        loud = dict(env, MQTT_BIND="0.0.0.0")
        proc = run_mosquitto_script(svc, relocate(script, root, certs, acl_dir, ports), loud, log_path)
        deadline = time.time() + 10
        while time.time() < deadline and proc.poll() is None and log_path.read_text().count("WARNING") < 2:
            time.sleep(0.2)
        log_text = log_path.read_text()
        c.check("WARNING: no server.crt/server.key" in log_text and "TLS (8883) is OFF" in log_text,
                "without certificates the broker warns that TLS is off", log_text[-1500:])
        c.check("WARNING: plain MQTT (1883) is published on 0.0.0.0" in log_text,
                "with MQTT_BIND=0.0.0.0 the broker warns that plain MQTT is on the network", log_text[-1500:])
    finally:
        obslib.stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def mysql_live(c, cfg, host, port):
    svc = cfg["services"]["mysql-users"]
    script = script_of(svc)
    suffix = secrets.token_hex(3)
    db, bridge_user, grafana_user = f"co2_obs_users_{suffix}", f"co2chk_b_{suffix}", f"co2chk_g_{suffix}"
    env = dict(os.environ)
    env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
    env["MYSQL_ROOT_PASSWORD"] = ""  # the local test server's root
    env["GRAFANA_MYSQL_USER"] = grafana_user
    s = script.replace("/co2/provisioning/mysql", str(REPO / "provisioning" / "mysql"))
    s = s.replace("host=mysql", "host=127.0.0.1").replace("port=3306", f"port={port}")
    s = s.replace("--login-host mysql", "--login-host 127.0.0.1").replace("--login-port 3306", f"--login-port {port}")
    s = s.replace("--database co2 ", f"--database {db} ").replace("--bridge-user co2_bridge", f"--bridge-user {bridge_user}")
    s = s.replace("exec bash", "bash")
    mysql = ["mysql", "--protocol=TCP", "-h", host, "-P", str(port), "-u", "root", "-N", "-B"]
    try:
        caps = limited_to(svc.get("cap_add") or [])
        r = subprocess.run(caps + ["/bin/bash", "-eu", "-c", s], env=env, capture_output=True, text=True,
                           check=False, timeout=120)
        c.check(r.returncode == 0, f"mysql-users script (apply.sh, no capabilities) sets up database {db} and its accounts",
                (r.stdout + r.stderr)[-3000:])
        grants = subprocess.run(mysql + ["-e", f"SHOW GRANTS FOR '{bridge_user}'@'%'; SHOW GRANTS FOR '{grafana_user}'@'%'"],
                                capture_output=True, text=True, check=False).stdout
        grants = re.sub(r"\\+_", "_", grants)  # db name escaped in GRANT output
        c.check(re.search(rf"GRANT SELECT, INSERT, UPDATE ON `{db}`", grants) is not None,
                "bridge account: SELECT, INSERT, UPDATE on the database", grants)
        g_lines = [ln for ln in grants.splitlines() if grafana_user in ln]
        c.check(any(re.match(rf"GRANT SELECT ON `{db}`\.\* TO", ln) for ln in g_lines)
                and all(re.match(rf"GRANT (USAGE ON \*\.\*|SELECT ON `{db}`\.\*) TO", ln) for ln in g_lines),
                "grafana account: SELECT only", grants)
        r = subprocess.run(["mysql", "--protocol=TCP", "-h", host, "-P", str(port), "-u", grafana_user,
                            f"-p{env['GRAFANA_MYSQL_PASSWORD']}", "-N", "-e", "SELECT 1"],
                           capture_output=True, text=True, check=False)
        c.check(r.returncode == 0, "grafana account logs in with GRAFANA_MYSQL_PASSWORD", r.stderr)
        r = subprocess.run(caps + ["/bin/bash", "-eu", "-c", s], env=env, capture_output=True, text=True,
                           check=False, timeout=120)
        c.check(r.returncode == 0 and "database changes: 0" in r.stdout,
                "mysql-users is idempotent (second run: database changes: 0)", (r.stdout + r.stderr)[-2000:])
    finally:
        subprocess.run(mysql + ["-e", f"DROP USER IF EXISTS '{bridge_user}'@'%', '{grafana_user}'@'%'; "
                                      f"DROP DATABASE IF EXISTS `{db}`"], capture_output=True, check=False)


def alertmanager_live(c, cfg):
    """The alertmanager service's start script with its paths moved into a temp
    dir and `amtool check-config` instead of the server: with no receiver, and
    with all three (password and token written to 0600 files, not the config)."""
    svc = cfg["services"]["alertmanager"]
    script = script_of(svc)
    if shutil.which("amtool") is None:
        c.check(False, "amtool is installed (prometheus-alertmanager)")
        return
    tmp = Path(tempfile.mkdtemp(prefix="co2-am-"))
    try:
        s = script.replace("/co2/provisioning/alertmanager", str(REPO / "provisioning" / "alertmanager"))
        s = s.replace("/alertmanager/config", str(tmp / "config"))
        s = re.sub(r"exec /bin/alertmanager[^\n]*\\\n[^\n]*", 'exec amtool check-config "$conf/alertmanager.yml"', s)
        c.check("/bin/alertmanager" not in s, "alertmanager script: the server's start replaced by amtool check-config")
        base = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        env = dict(os.environ, **base)
        r = subprocess.run(["/bin/sh", "-eu", "-c", s], env=env, capture_output=True, text=True, check=False)
        c.check(r.returncode == 0 and "no receiver set" in r.stderr,
                "alertmanager script, no receiver in .env: a valid config, and a warning that alerts reach nobody",
                (r.stdout + r.stderr)[-2000:])
        pw, token = "pw-" + secrets.token_hex(8), "tk_" + secrets.token_hex(8)
        env.update({"ALERT_EMAIL_TO": "ops@example.org", "ALERT_EMAIL_FROM": "co2@example.org",
                    "ALERT_SMTP_HOST": "smtp.example.org:587", "ALERT_SMTP_USER": "co2", "ALERT_SMTP_PASSWORD": pw,
                    "ALERT_WEBHOOK_URL": "https://hooks.example.org/co2", "ALERT_NTFY_URL": "https://ntfy.sh/co2-test",
                    "ALERT_NTFY_TOKEN": token})
        r = subprocess.run(["/bin/sh", "-eu", "-c", s], env=env, capture_output=True, text=True, check=False)
        conf = (tmp / "config" / "alertmanager.yml")
        text = conf.read_text() if conf.exists() else ""
        c.check(r.returncode == 0 and "SUCCESS" in r.stdout,
                "alertmanager script with e-mail, webhook and ntfy: amtool check-config passes", (r.stdout + r.stderr)[-2000:])
        c.check(pw not in text and token not in text and "ntfy.sh/co2-test?template=alertmanager" in text,
                "... the config names the password and token files, not the secrets; ntfy gets its template")
        files = [tmp / "config" / "smtp-password", tmp / "config" / "ntfy-token"]
        c.check(all(f.exists() and f.stat().st_mode & 0o777 == 0o600 for f in files)
                and files[0].read_text() == pw and files[1].read_text() == token,
                "... the password and token files are 0600 and hold exactly the secret (no line break)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bridge_env_live(c, cfg):
    binary = Path(os.environ.get("CO2_BRIDGE_BIN") or REPO / "target" / "debug" / "co2-bridge")
    r = subprocess.run([str(binary), "--help"], capture_output=True, text=True, check=False) if binary.exists() else None
    if r is None or "check-config" not in r.stdout:
        print(f"note: {binary} with check-config not built; skipping the env parse test")
        return
    for name in ("bridge", "bridge-migrate"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CO2_BRIDGE")}
        env.update({k: str(v) for k, v in (cfg["services"][name].get("environment") or {}).items()})
        r = subprocess.run([str(binary), "check-config"], env=env, capture_output=True, text=True, check=False,
                           cwd=tempfile.gettempdir())
        c.check(r.returncode == 0, f"{name}: its CO2_BRIDGE__* environment passes `co2-bridge check-config`",
                (r.stdout + r.stderr)[-2000:])
        c.check("testvalue" not in r.stdout, f"{name}: check-config masks the passwords")
    # The same bridge with CO2_SINK=influx: readings and dead letters to the InfluxDB sink.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CO2_BRIDGE")}
    env.update({k: str(v) for k, v in (cfg["services"]["bridge"].get("environment") or {}).items()})
    env.update({"CO2_BRIDGE__CO2__SINK": "influx", "CO2_BRIDGE__DEAD_LETTERS__SINK": "influx"})
    r = subprocess.run([str(binary), "check-config"], env=env, capture_output=True, text=True, check=False,
                       cwd=tempfile.gettempdir())
    c.check(r.returncode == 0 and 'kind = "influxdb"' in r.stdout and "testvalue" not in r.stdout,
            "bridge with CO2_SINK=influx: its environment passes check-config (sink influx, password masked)",
            (r.stdout + r.stderr)[-2000:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--env-file", required=True)
    ap.add_argument("--mysql-host", default="127.0.0.1")
    ap.add_argument("--mysql-port", type=int, default=3306)
    ap.add_argument("--no-live", action="store_true")
    args = ap.parse_args()
    c = obslib.Counter()
    cfg = yaml.safe_load(Path(args.config).read_text())
    env = dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", Path(args.env_file).read_text(), re.M))
    static_checks(c, cfg, env)
    env_example_checks(c)
    docker_checks(c)
    if not args.no_live:
        mosquitto_live(c, cfg)
        mysql_live(c, cfg, args.mysql_host, args.mysql_port)
        bridge_env_live(c, cfg)
        alertmanager_live(c, cfg)
    c.finish()


if __name__ == "__main__":
    main()
