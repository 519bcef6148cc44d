"""Prints the X-Twilio-Signature the official `twilio` package computes for one request: what Twilio sends on
a status callback, to sign the callbacks a test posts to smsgate. The package's own code does the signing
(`RequestValidator(auth_token).compute_signature(url, params)`); this script only reads the input.

usage: twilio_sign.py < {"url": "https://...", "params": [["MessageSid", "SM..."], ...], "auth_token": "..."}
Prints the signature and a newline. A name given more than once is passed as a multi-valued form (the
package then signs each distinct value, sorted, as it does for Flask's MultiDict and Django's QueryDict).
"""
import json
import sys

from twilio.request_validator import RequestValidator


class MultiValued(dict):
    """A name -> [values] form with the `getall` the package asks a multi-valued form for."""

    def getall(self, name):
        return self[name]


def main():
    request = json.load(sys.stdin)
    url, auth_token, pairs = request["url"], request["auth_token"], request["params"]
    if not isinstance(url, str) or not isinstance(auth_token, str) or not isinstance(pairs, list):
        sys.exit("twilio_sign.py: url and auth_token must be strings, params a list of [name, value] pairs")
    names = [pair[0] for pair in pairs]
    if len(set(names)) == len(names):
        params = {name: value for name, value in pairs}
    else:
        params = MultiValued()
        for name, value in pairs:
            params.setdefault(name, []).append(value)
    print(RequestValidator(auth_token).compute_signature(url, params))


if __name__ == "__main__":
    main()
