"""Computes, with Alibaba Cloud's official SDK signer (alibabacloud-tea-openapi, ACS3-HMAC-SHA256, the V3
signature its clients use by default), the Authorization header of a request as a mock server received it. The
mock Aliyun of the integration tests compares it byte for byte with the Authorization smsgate sent: the
signature is checked by Aliyun's own code, not by a second reading of its documentation.

usage: aliyun_sign.py < REQUEST_JSON
REQUEST_JSON (one object on stdin):
  {"method": "POST", "path": "/", "query": [[k, v], ...] or "raw query string",
   "headers": [[name, value], ...], "body": "raw body", "access_key_id": "...", "access_key_secret": "..."}
  `query` as pairs holds DECODED values (as form_urlencoded::parse gives them); as a string it is the raw query
  (without `?`), decoded here as the SDK's server would (`+` is a space). A `?…` left on `path` is dropped.
prints: the Authorization value, one line, e.g. `ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.

Which headers are signed: the SDK signs every header of its request object, and that object holds host,
accept, user-agent, content-type (with a body) and x-acs-* (do_request in alibabacloud_tea_openapi/client.py);
the transport adds the others (content-length, accept-encoding, connection) after signing. So the received
headers with those names are handed to the SDK, whatever their case; the Authorization itself is not.
"""
import json
import sys
from urllib.parse import parse_qsl

from alibabacloud_tea_openapi.utils import Utils
from darabonba.request import DaraRequest

SIGNATURE_ALGORITHM = "ACS3-HMAC-SHA256"  # do_request's default (`self._signature_algorithm or ...`)
SDK_HEADERS = ("host", "accept", "user-agent", "content-type")


def signed_by_sdk(name):
    return name in SDK_HEADERS or name.startswith("x-acs-")


def main():
    spec = json.load(sys.stdin)
    request = DaraRequest()
    request.method = spec["method"]
    request.pathname = spec["path"].split("?", 1)[0]
    query = spec.get("query") or []
    if isinstance(query, str):
        query = parse_qsl(query, keep_blank_values=True)
    # The SDK's request query is a dict (a repeated key keeps its last value, as it would there).
    request.query = {k: v for k, v in query}
    request.headers = {}
    for name, value in spec["headers"]:
        name = name.lower()
        if signed_by_sdk(name):
            if name in request.headers:
                sys.exit(f"header {name} received twice")
            request.headers[name] = value
    body = spec.get("body") or ""
    # As do_request: the payload hash is the hash of the body bytes (of b'' when there is none).
    payload = Utils.hash(body.encode("utf-8"), SIGNATURE_ALGORITHM).hex()
    print(
        Utils.get_authorization(
            request, SIGNATURE_ALGORITHM, payload, spec["access_key_id"], spec["access_key_secret"]
        )
    )


if __name__ == "__main__":
    main()
