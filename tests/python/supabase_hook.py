"""Posts one Supabase Auth Send SMS hook request, signed as Supabase Auth signs it: with the reference
Standard Webhooks library, the secret as Supabase shows it (`v1,whsec_...`, the `v1,` stripped), and several
signatures joined with ", " when several secrets are given. Prints one JSON line: status, headers, body.

usage: supabase_hook.py MODE URL TIMESTAMP PAYLOAD_JSON SECRET [SECRET...]
MODE: `signed`, or `tampered` (the code in the body is changed after signing).
"""
import json
import sys
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook


def main():
    mode, url, timestamp, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    secrets = sys.argv[5:]
    msg_id = str(uuid.uuid4())
    when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    signatures = [Webhook(s.removeprefix("v1,")).sign(msg_id, when, payload) for s in secrets]
    if mode == "tampered":
        body = json.loads(payload)
        body["sms"]["otp"] = "999999"
        payload = json.dumps(body)
    request = urllib.request.Request(
        url,
        data=payload.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": ", ".join(signatures),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            status, headers, body = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        status, headers, body = e.code, dict(e.headers), e.read()
    headers = {k.lower(): v for k, v in headers.items()}
    print(json.dumps({"status": status, "headers": headers, "body": json.loads(body)}), flush=True)


if __name__ == "__main__":
    main()
