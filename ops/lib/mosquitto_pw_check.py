"""Exit 0 when USER's hash in a Mosquitto password file matches the password
on stdin (first line), 1 otherwise. Used by ops/install-server.sh to keep the
broker user in step with its secret without re-hashing on every run (the hash
is salted, so comparing files would always differ).

Usage: python3 mosquitto_pw_check.py PASSWORD_FILE USER < secret
"""
import base64
import hashlib
import hmac
import sys


def matches(stored: str, password: bytes) -> bool:
    parts = stored.split("$")
    # $7$<iterations>$<salt b64>$<hash b64>: PBKDF2-HMAC-SHA512 (mosquitto >= 2.0)
    if len(parts) == 5 and parts[1] == "7":
        salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
        got = hashlib.pbkdf2_hmac("sha512", password, salt, int(parts[2]), len(want))
        return hmac.compare_digest(got, want)
    # $6$<salt b64>$<hash b64>: salted SHA512 (mosquitto 1.x)
    if len(parts) == 4 and parts[1] == "6":
        salt, want = base64.b64decode(parts[2]), base64.b64decode(parts[3])
        return hmac.compare_digest(hashlib.sha512(password + salt).digest(), want)
    return False


def main() -> int:
    path, user = sys.argv[1], sys.argv[2]
    password = sys.stdin.readline().rstrip("\r\n").encode()
    with open(path, encoding="utf-8") as f:
        for line in f:
            name, sep, stored = line.rstrip("\n").partition(":")
            if sep and name == user:
                return 0 if matches(stored, password) else 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
