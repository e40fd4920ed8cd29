#!/usr/bin/env python3
"""An independent TC3-HMAC-SHA256 signer, the other half of
spec/unit/sign_diff_spec.lua.

It is written from the algorithm in the shared reference (eid-api.md, section
2) and the request contract in eidkit.h, never from core/src/sign.c, so that a
misreading of the algorithm in C shows up as a disagreement rather than being
copied. Standard library only, so the test needs nothing beyond python3.

Usage:
    tc3_reference.py INDEX BODIES OUT

INDEX is JSON lines, one request each:
    {"id": 7, "secret_id": "...", "secret_key_hex": "...",
     "body_offset": 0, "body_len": 12,
     "timestamp": 1700000000, "action": "GetEidToken",
     "host": ..., "service": ..., "version": ..., "content_type": ...,
     "region": ..., "token": ..., "language": ..., "signed_headers": [...]}
Fields after "action" may be absent, which means the eidkit.h default.
BODIES holds every body back to back; offsets index into it, so one file
carries megabytes of binary bodies without JSON escaping.
OUT receives JSON lines of {"id", "date", "hashed_payload",
"hashed_canonical_request", "string_to_sign", "signature", "authorization"}.

Secrets travel as hex because a secret key is bytes, not text, and JSON
strings cannot carry arbitrary bytes. Nothing secret is ever printed.
"""

import datetime
import hashlib
import hmac
import json
import sys

ALGORITHM = "TC3-HMAC-SHA256"

# Defaults are eidkit's contract (eidkit.h), not part of TC3 itself.
DEFAULT_HOST = "faceid.tencentcloudapi.com"
DEFAULT_CONTENT_TYPE = "application/json"
FACEID_VERSION = "2018-03-01"
DEFAULT_SIGNED = ("content-type", "host")


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def hmac_sha256(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def utc_date(ts):
    # datetime does its own calendar arithmetic, which is the point: the C
    # code uses a days-to-civil formula, and the two must agree to 9999-12-31.
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (epoch + datetime.timedelta(seconds=ts)).strftime("%Y-%m-%d")


def header_values(req):
    """Every header value TC3 may sign, by lower-case name, as sent."""
    host = req.get("host") or DEFAULT_HOST
    values = {
        "content-type": req.get("content_type") or DEFAULT_CONTENT_TYPE,
        "host": host,
        "x-tc-action": req["action"],
        "x-tc-timestamp": str(req["timestamp"]),
        "x-tc-version": req.get("version") or FACEID_VERSION,
    }
    for field, name in (("region", "x-tc-region"), ("token", "x-tc-token"),
                        ("language", "x-tc-language")):
        if req.get(field) is not None:
            values[name] = req[field]
    return values


def service_of(req):
    if req.get("service"):
        return req["service"]
    # The official SDKs take the endpoint's first label. Lower-cased because
    # host names are case-insensitive while a credential scope is not.
    host = req.get("host") or DEFAULT_HOST
    return host.split(".")[0].lower()


def sign(req, body):
    """Return every intermediate of signing req with body, per section 2."""
    secret_key = bytes.fromhex(req["secret_key_hex"])
    values = header_values(req)
    names = sorted({n.lower() for n in (req.get("signed_headers") or DEFAULT_SIGNED)})

    # Section 2 prints lower(name) ":" trim(value) and notes that the values
    # are lower-cased too (revision C: "x-tc-action:describeinstances").
    canonical_headers = "".join(
        "%s:%s\n" % (n, values[n].strip().lower()) for n in names)
    signed_headers = ";".join(names)
    hashed_payload = sha256_hex(body)
    canonical_request = "\n".join([
        "POST", "/", "", canonical_headers, signed_headers, hashed_payload])
    hashed_cr = sha256_hex(canonical_request.encode("utf-8"))

    date = utc_date(req["timestamp"])
    service = service_of(req)
    scope = "%s/%s/tc3_request" % (date, service)
    string_to_sign = "\n".join([ALGORITHM, str(req["timestamp"]), scope, hashed_cr])

    secret_date = hmac_sha256(b"TC3" + secret_key, date.encode("utf-8"))
    secret_service = hmac_sha256(secret_date, service.encode("utf-8"))
    secret_signing = hmac_sha256(secret_service, b"tc3_request")
    signature = hmac.new(secret_signing, string_to_sign.encode("utf-8"),
                         hashlib.sha256).hexdigest()

    authorization = "%s Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        ALGORITHM, req["secret_id"], scope, signed_headers, signature)
    return {
        "date": date,
        "hashed_payload": hashed_payload,
        "hashed_canonical_request": hashed_cr,
        "string_to_sign": string_to_sign,
        "secret_signing": secret_signing.hex(),
        "signature": signature,
        "authorization": authorization,
    }


def main(argv):
    if len(argv) != 4:
        sys.stderr.write("usage: tc3_reference.py INDEX BODIES OUT\n")
        return 2
    index_path, bodies_path, out_path = argv[1:]
    with open(bodies_path, "rb") as f:
        bodies = f.read()
    with open(index_path, "r", encoding="utf-8") as idx, \
            open(out_path, "w", encoding="utf-8") as out:
        for line in idx:
            if not line.strip():
                continue
            req = json.loads(line)
            start, length = req["body_offset"], req["body_len"]
            if start + length > len(bodies):
                # Report by id only: the request carries secrets.
                sys.stderr.write("case %s: body runs past the bodies file\n" % req["id"])
                return 1
            result = sign(req, bodies[start:start + length])
            result["id"] = req["id"]
            out.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
