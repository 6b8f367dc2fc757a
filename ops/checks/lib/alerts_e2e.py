#!/usr/bin/python3
"""Alerts end to end, on loopback, with the real programs (run by ops/checks/58-alerts.sh).

    alerts_e2e.py --bridge-port P --bridge-pid PID --topic-prefix PREFIX --work DIR

A running co2-bridge (started by the shell part: its own database, topic prefix
and port) is scraped by a real Prometheus with the repository's
provisioning/prometheus (prometheus.yml with its `alerting:` section, and the
rules), which sends to a real Alertmanager configured by
provisioning/alertmanager/render.sh. Both run on free ports in DIR, with
scrape and evaluation every 1 s and group_wait 1 s.

The rules are the repository's with two numbers made short, and nothing else:
CO2DeviceSilent's "> 600" (seconds without a reading) and CO2BridgeDown's
"for: 2m". Each replacement must match exactly once inside that alert, so a
changed rule fails this check instead of quietly testing something else.

Receivers: a webhook (a small HTTP server here, recording what it gets) and
e-mail to an SMTP server here (aiosmtpd, STARTTLS required, with a test CA
from openssl, and a login checked against the password file Alertmanager reads).

Steps: a device publishes, then stops: one firing notification naming it, by
webhook and by mail, with the words of the rule and the links of the
template; it publishes again: a resolved one. With a maintenance silence
(`amtool silence add device=...`) it stops again: it fires in Prometheus,
nothing is sent. The silence expired, the bridge is killed: "bridge
down" arrives, CO2DeviceSilent fires in Prometheus but Alertmanager holds it
back (inhibited), so no per-device notification arrives. Also: amtool renders
the message template with sample data, and `amtool check-config` passes.
Needs the Debian packages prometheus, prometheus-alertmanager and python3-aiosmtpd.
Prints ok/FAIL lines and "N passed, M failed"; exits 1 on any failure.
"""

import argparse
import email
import email.policy
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import logging
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

# aiosmtpd 1.4 logs a warning about its own deprecated attribute at every login.
logging.getLogger("mail.log").setLevel(logging.ERROR)
REPO = Path(__file__).resolve().parents[3]
PROM_DIR = REPO / "provisioning" / "prometheus"
AM_DIR = REPO / "provisioning" / "alertmanager"

# (alert, text in the repository, shortened text): the only changes to the rules.
SILENT_S = 8
SHORTEN = [
    ("CO2DeviceSilent", "> 600\n", f"> {SILENT_S}\n"),
    ("CO2BridgeDown", "for: 2m\n", "for: 2s\n"),
]
SMTP_USER, SMTP_PASSWORD = "co2-alerts", "s3cret-" + os.urandom(6).hex()


class Counter:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok, desc, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   - {desc}")
        else:
            self.failed += 1
            print(f"FAIL - {desc}")
            if detail:
                for line in str(detail).splitlines()[-25:]:
                    print(f"       {line}")
        return ok

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed")
        raise SystemExit(1 if self.failed else 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shorten_rules(text):
    """The rules with SHORTEN applied, each exactly once inside its alert; or raises."""
    blocks = re.split(r"(?m)^(?=      - alert: )", text)
    for alert, old, new in SHORTEN:
        hits = [i for i, b in enumerate(blocks) if b.startswith(f"      - alert: {alert}\n")]
        if len(hits) != 1 or blocks[hits[0]].count(old) != 1:
            raise ValueError(f"{alert}: expected one {old.strip()!r} in one alert block")
        blocks[hits[0]] = blocks[hits[0]].replace(old, new)
    return "".join(blocks)


# ---------------------------------------------------------------- receivers
class Webhook:
    """Records every JSON body POSTed to it."""

    def __init__(self):
        self.got, self.lock = [], threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.got.append((time.monotonic(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def since(self, t0):
        with self.lock:
            return [m for t, m in self.got if t >= t0]


class Mailbox:
    """aiosmtpd handler: keeps every message delivered."""

    def __init__(self):
        self.got, self.lock = [], threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        with self.lock:
            self.got.append((time.monotonic(), {
                "subject": str(msg["Subject"]), "to": envelope.rcpt_tos,
                "text": body.get_content() if body else "", "tls": session.ssl is not None,
                "login": bool(session.authenticated),
            }))
        return "250 OK"

    def since(self, t0):
        with self.lock:
            return [m for t, m in self.got if t >= t0]


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = getattr(auth_data, "login", b"") == SMTP_USER.encode() and \
        getattr(auth_data, "password", b"") == SMTP_PASSWORD.encode()
    return AuthResult(success=ok)


# ---------------------------------------------------------------- helpers
def http_json(url, data=None):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=3) as r:
        return json.loads(r.read() or b"null")


def wait_for(pred, timeout, step=0.25):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return pred()


def publish(prefix, device, n, value=641, every=1.0):
    for i in range(n):
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-q", "1", "-t", f"{prefix}/{device}/emissions",
                        "-m", f"{stamp}|{value + i}"], check=True, timeout=10)
        if i + 1 < n:
            time.sleep(every)


def alerts_in(msgs, name, status=None, device=None):
    out = []
    for m in msgs:
        for a in m.get("alerts", []):
            if a["labels"].get("alertname") == name and (status is None or a["status"] == status) \
                    and (device is None or a["labels"].get("device") == device):
                out.append((m, a))
    return out


def start(cmd, log):
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc):
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- the check
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bridge-port", type=int, required=True)
    ap.add_argument("--bridge-pid", type=int, required=True)
    ap.add_argument("--topic-prefix", required=True)
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args()
    c = Counter()
    work = args.work
    device = f"pi-kitchen-{os.getpid()}"
    procs = []
    try:
        run(c, args, work, device, procs)
    finally:
        for p in procs:
            stop(p)
    c.finish()


def run(c, args, work, device, procs):
    # ---- the message template, with sample data (amtool template render)
    tdir = work / "render-sample"
    tdir.mkdir()
    env = dict(os.environ, ALERT_WEBHOOK_URL="http://127.0.0.1:9/x",
               ALERT_STATUS_URL="https://co2.example.org/status/", ALERT_GRAFANA_URL="https://grafana.example.org")
    r = subprocess.run(["sh", str(AM_DIR / "render.sh"), str(tdir)], env=env, capture_output=True, text=True)
    c.check(r.returncode == 0, "render.sh renders a config with a webhook", r.stderr)
    sample = {
        "receiver": "co2", "status": "firing", "externalURL": "http://127.0.0.1:9093",
        "groupLabels": {"device": "pi-kitchen"},
        "commonLabels": {"alertname": "CO2DeviceSilent", "device": "pi-kitchen", "severity": "warning"},
        "commonAnnotations": {},
        "alerts": [{
            "status": "firing", "labels": {"alertname": "CO2DeviceSilent", "device": "pi-kitchen", "severity": "warning"},
            "annotations": {"summary": "pi-kitchen sent nothing for 12m 0s",
                            "description": "pi-kitchen sent nothing for 12m 0s; last reading 641 ppm at 2026-12-07 10:02 UTC."},
            "startsAt": "2026-12-07T10:12:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "1"}],
    }
    (work / "sample.json").write_text(json.dumps(sample))
    r = subprocess.run(["amtool", "template", "render", f"--template.glob={tdir}/co2.tmpl",
                        f"--template.data={work}/sample.json",
                        "--template.text", '{{ template "co2.subject" . }}\n{{ template "co2.text" . }}'],
                       capture_output=True, text=True)
    want = ["[co2] pi-kitchen sent nothing for 12m 0s",
            "last reading 641 ppm at 2026-12-07 10:02 UTC",
            "Since 2026-12-07 10:12 UTC (CO2DeviceSilent, warning)",
            "Status page: https://co2.example.org/status/",
            "Dashboard:   https://grafana.example.org/d/co2-emissions?var-device=pi-kitchen",
            'amtool silence add --duration=2h --comment="why" alertname="CO2DeviceSilent" device="pi-kitchen"']
    c.check(r.returncode == 0 and all(w in r.stdout for w in want),
            "amtool template render: subject and text name the device, the reading, the links and a silence command",
            r.stdout + r.stderr)

    # ---- receivers
    hook = Webhook()
    mail = Mailbox()
    certs = work / "smtp-tls"
    certs.mkdir()
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem")],
                       capture_output=True, text=True)
    c.check(r.returncode == 0, "a test certificate for the SMTP server (openssl)", r.stderr)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs / "cert.pem", certs / "key.pem")
    smtp_port = free_port()
    smtp = Controller(mail, hostname="127.0.0.1", port=smtp_port, tls_context=tls, require_starttls=True,
                      authenticator=authenticator, auth_require_tls=True,
                      # Alertmanager's LOGIN expects the challenge "Username:", aiosmtpd
                      # sends "User Name": PLAIN is what real servers offer first anyway.
                      auth_exclude_mechanism=["LOGIN"])
    smtp.start()
    try:
        run_stack(c, args, work, device, procs, hook, mail, smtp_port, certs)
    finally:
        smtp.stop()


def run_stack(c, args, work, device, procs, hook, mail, smtp_port, certs):
    # ---- Alertmanager, configured by render.sh
    am_port = free_port()
    am_dir = work / "alertmanager"
    am_dir.mkdir()
    # No line break at the end: Alertmanager 0.25 sends the file's bytes as they are.
    (work / "smtp-password").write_text(SMTP_PASSWORD)
    env = dict(os.environ, ALERT_EMAIL_TO="alerts@example.org", ALERT_EMAIL_FROM="co2@example.org",
               ALERT_SMTP_HOST=f"127.0.0.1:{smtp_port}", ALERT_SMTP_USER=SMTP_USER,
               ALERT_SMTP_PASSWORD_FILE=str(work / "smtp-password"), ALERT_SMTP_CA_FILE=str(certs / "cert.pem"),
               ALERT_WEBHOOK_URL=f"http://127.0.0.1:{hook.port}/alerts",
               ALERT_STATUS_URL=f"http://127.0.0.1:{args.bridge_port}/", ALERT_GRAFANA_URL="http://127.0.0.1:3000/",
               ALERT_GROUP_WAIT="1s", ALERT_GROUP_INTERVAL="1s", ALERT_REPEAT_INTERVAL="1h")
    r = subprocess.run(["sh", str(AM_DIR / "render.sh"), str(am_dir)], env=env, capture_output=True, text=True)
    c.check(r.returncode == 0, "render.sh: e-mail (STARTTLS, login, password file) and webhook", r.stderr)
    conf = am_dir / "alertmanager.yml"
    r = subprocess.run(["amtool", "check-config", str(conf)], capture_output=True, text=True)
    c.check(r.returncode == 0, "amtool check-config on the rendered config", r.stdout + r.stderr)
    c.check(SMTP_PASSWORD not in conf.read_text(), "the rendered config names the password file, not the password")
    procs.append(start(["prometheus-alertmanager", f"--config.file={conf}", f"--storage.path={am_dir}/data",
                        f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                       work / "alertmanager.log"))
    am = f"http://127.0.0.1:{am_port}"
    c.check(wait_for(lambda: ready(f"{am}/-/ready"), 20), "Alertmanager is ready",
            (work / "alertmanager.log").read_text()[-2000:])

    # ---- Prometheus: the repository's config and rules, intervals and thresholds shortened
    prom_port = free_port()
    pdir = work / "prometheus"
    (pdir / "rules").mkdir(parents=True)
    (pdir / "targets").mkdir()
    text = (PROM_DIR / "prometheus.yml").read_text()
    text = re.sub(r"(scrape_interval|evaluation_interval): 15s", r"\1: 1s", text)
    text = text.replace("scrape_timeout: 5s", "scrape_timeout: 1s").replace("localhost:9090", f"127.0.0.1:{prom_port}")
    (pdir / "prometheus.yml").write_text(text)
    (pdir / "targets" / "co2-bridge.yml").write_text(f"- targets: ['127.0.0.1:{args.bridge_port}']\n")
    (pdir / "targets" / "alertmanager.yml").write_text(f"- targets: ['127.0.0.1:{am_port}']\n")
    try:
        rules = shorten_rules((PROM_DIR / "rules" / "co2.rules.yml").read_text())
        c.check(True, f"rules rendered with only the thresholds shortened ({', '.join(a for a, _, _ in SHORTEN)})")
    except ValueError as e:
        c.check(False, "rules rendered with only the thresholds shortened", e)
        return
    (pdir / "rules" / "co2.rules.yml").write_text(rules)
    r = subprocess.run(["promtool", "check", "config", str(pdir / "prometheus.yml")], capture_output=True, text=True)
    c.check(r.returncode == 0, "promtool check config (the repository's, with its alerting section)", r.stdout + r.stderr)
    procs.append(start(["prometheus", f"--config.file={pdir}/prometheus.yml", f"--storage.tsdb.path={pdir}/data",
                        f"--web.listen-address=127.0.0.1:{prom_port}", "--rules.alert.resend-delay=1s"],
                       work / "prometheus.log"))
    prom = f"http://127.0.0.1:{prom_port}"
    c.check(wait_for(lambda: ready(f"{prom}/-/ready"), 30), "Prometheus is ready",
            (work / "prometheus.log").read_text()[-2000:])
    c.check(wait_for(lambda: prom_am_active(prom, am_port), 20), "Prometheus discovered the Alertmanager")

    # ---- a device publishes, then stops
    t0 = time.monotonic()
    publish(args.topic_prefix, device, 4, value=638)
    last_value = 641
    bound = SILENT_S + 25
    fired = wait_for(lambda: alerts_in(hook.since(t0), "CO2DeviceSilent", "firing", device), bound)
    c.check(len(fired) == 1, f"webhook: one firing notification for {device} within {bound} s "
                             f"(got it after {time.monotonic() - t0:.0f} s)", json.dumps(hook.since(t0))[-1500:])
    if fired:
        m, a = fired[0]
        c.check(m["groupLabels"] == {"device": device}, "... grouped by device", m["groupLabels"])
        c.check(re.fullmatch(rf"{device} sent nothing for [0-9.]+s", a["annotations"].get("summary", "")) is not None
                and f"last reading {last_value} ppm at " in a["annotations"].get("description", ""),
                "... its words: '<device> sent nothing for Ns', last reading and time", a["annotations"])
    got = wait_for(lambda: [m for m in mail.since(t0) if device in m["subject"]], 15)
    if c.check(len(got) >= 1, "e-mail: the same alert delivered to the SMTP server", mail.since(t0)):
        m = got[0]
        c.check(m["tls"] and m["login"], "... over STARTTLS, logged in with the password file's password")
        c.check(m["subject"].startswith(f"[co2] {device} sent nothing for "), "... subject says what happened",
                m["subject"])
        c.check(f"last reading {last_value} ppm at " in m["text"]
                and f"Status page: http://127.0.0.1:{args.bridge_port}/" in m["text"]
                and f"d/co2-emissions?var-device={device}" in m["text"],
                "... text: the reading, the status page and the device's dashboard", m["text"])
    time.sleep(3)
    c.check(len(alerts_in(hook.since(t0), "CO2DeviceSilent", "firing", device)) == 1,
            "no repeat while it stays silent (repeat_interval)", len(alerts_in(hook.since(t0), "CO2DeviceSilent")))

    # ---- it publishes again
    t1 = time.monotonic()
    publish(args.topic_prefix, device, 3, value=650)
    res = wait_for(lambda: alerts_in(hook.since(t1), "CO2DeviceSilent", "resolved", device), 20)
    c.check(len(res) >= 1, f"webhook: resolved once {device} publishes again "
                           f"(after {time.monotonic() - t1:.0f} s)", json.dumps(hook.since(t1))[-1500:])
    got = wait_for(lambda: [m for m in mail.since(t1) if m["subject"].startswith("[co2] RESOLVED: ")], 15)
    c.check(len(got) >= 1 and device in got[0]["text"], "e-mail: the resolved message, naming the device",
            mail.since(t1))

    # ---- a maintenance silence: the one documented command (docs/alerts.md)
    t3 = time.monotonic()
    r = subprocess.run(["amtool", f"--alertmanager.url={am}", "silence", "add", "--duration=10m",
                        "--comment=moving the Pi", f"device={device}"], capture_output=True, text=True)
    silence_id = r.stdout.strip()
    c.check(r.returncode == 0 and silence_id, f"amtool silence add device={device}", r.stdout + r.stderr)
    c.check(wait_for(lambda: prom_firing(prom, "CO2DeviceSilent", device), SILENT_S + 20),
            f"Prometheus: CO2DeviceSilent fires again for {device} (it stopped publishing)")
    c.check(wait_for(lambda: am_suppressed(am, "CO2DeviceSilent", device, "silencedBy"), 10),
            "Alertmanager: it is silenced")
    time.sleep(3)
    c.check(not alerts_in(hook.since(t3), "CO2DeviceSilent", "firing"), "webhook: nothing while silenced",
            json.dumps(hook.since(t3))[-1500:])

    # ---- the bridge dies while the device publishes: "bridge down", no per-device alert
    publish(args.topic_prefix, device, 4, value=660)
    c.check(wait_for(lambda: not prom_firing(prom, "CO2DeviceSilent", device), 15),
            f"{device} publishes again: CO2DeviceSilent is over")
    r = subprocess.run(["amtool", f"--alertmanager.url={am}", "silence", "expire", silence_id],
                       capture_output=True, text=True)
    c.check(r.returncode == 0, "amtool silence expire: the maintenance is over", r.stdout + r.stderr)
    t2 = time.monotonic()
    os.kill(args.bridge_pid, signal.SIGKILL)
    down = wait_for(lambda: alerts_in(hook.since(t2), "CO2BridgeDown", "firing"), 20)
    c.check(len(down) >= 1, f"webhook: 'bridge down' after the bridge is killed ({time.monotonic() - t2:.0f} s)",
            json.dumps(hook.since(t2))[-1500:])
    # The device's silence fires in Prometheus (the rule still sees its last reading)...
    firing = wait_for(lambda: prom_firing(prom, "CO2DeviceSilent", device), SILENT_S + 20)
    c.check(firing, f"Prometheus: CO2DeviceSilent fires for {device} while the bridge is down")
    inhibited = wait_for(lambda: am_suppressed(am, "CO2DeviceSilent", device, "inhibitedBy"), 10)
    c.check(inhibited, "Alertmanager: it is inhibited by the bridge-down alert")
    time.sleep(4)
    c.check(not alerts_in(hook.since(t2), "CO2DeviceSilent", "firing"),
            "webhook: no per-device notification while the bridge is down",
            json.dumps(hook.since(t2))[-1500:])
    c.check(not [m for m in mail.since(t2) if "sent nothing" in m["subject"]]
            and [m for m in mail.since(t2) if m["subject"].startswith("[co2] co2-bridge ")],
            "e-mail: the bridge-down mail arrived, and no per-device one",
            [m["subject"] for m in mail.since(t2)])
    if c.failed:
        for log in ("prometheus.log", "alertmanager.log"):
            print(f"--- {log} (warnings and errors)")
            lines = [ln for ln in (work / log).read_text().splitlines() if re.search(r"level=(warn|error)", ln)]
            print("\n".join(lines[-12:]))


def ready(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def prom_am_active(prom, am_port):
    try:
        d = http_json(f"{prom}/api/v1/alertmanagers")
    except OSError:
        return False
    return any(f":{am_port}/" in a["url"] for a in d["data"]["activeAlertmanagers"])


def prom_firing(prom, name, device):
    try:
        d = http_json(f"{prom}/api/v1/alerts")
    except OSError:
        return False
    return any(a["labels"].get("alertname") == name and a["labels"].get("device") == device and a["state"] == "firing"
               for a in d["data"]["alerts"])


def am_suppressed(am, name, device, by):
    """The alert is in Alertmanager, suppressed, with `by` (inhibitedBy, silencedBy) set."""
    try:
        d = http_json(f"{am}/api/v2/alerts?filter=alertname%3D%22{name}%22")
    except OSError:
        return False
    return any(a["labels"].get("device") == device and a["status"]["state"] == "suppressed"
               and a["status"][by] for a in d)


if __name__ == "__main__":
    main()
