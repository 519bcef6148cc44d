"""A mock Tencent SMS endpoint over HTTPS for the image test (.ci/image_test.sh).

Serves TLS with the given certificate on 127.0.0.1 (port 0: any free one; the port is printed as the first
line `port N`), verifies every request's TC3-HMAC-SHA256 signature with the given SecretKey (an
implementation of Tencent's documented algorithm, independent of the gateway's), answers SendSms with an Ok
entry per number, and prints one JSON line per request: {"action", "host", "signature_valid", "numbers"}.
Standard library only.
"""
import hashlib, hmac, http.server, json, ssl, sys, time


def sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def verify(headers, body, secret_key):
    timestamp = headers.get("x-tc-timestamp", "")
    if not timestamp.isdigit():
        return False
    date = time.strftime("%Y-%m-%d", time.gmtime(int(timestamp)))
    auth = headers.get("authorization", "")
    if not auth.startswith("TC3-HMAC-SHA256 Credential="):
        return False
    signed = auth.split("SignedHeaders=")[1].split(",")[0]
    canonical_headers = "".join(f"{h}:{headers.get(h, '').strip().lower()}\n" for h in signed.split(";"))
    canonical = "\n".join(["POST", "/", "", canonical_headers, signed, hashlib.sha256(body).hexdigest()])
    to_sign = "\n".join(["TC3-HMAC-SHA256", timestamp, f"{date}/sms/tc3_request",
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = sign(sign(sign(("TC3" + secret_key).encode(), date), "sms"), "tc3_request")
    expected = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(auth.rsplit("Signature=", 1)[-1], expected)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        valid = verify(headers, body, self.server.secret_key)
        numbers = json.loads(body or b"{}").get("PhoneNumberSet", [])
        print(json.dumps({"action": headers.get("x-tc-action"), "host": headers.get("host"),
                          "signature_valid": valid, "numbers": numbers}), flush=True)
        if valid:
            answer = {"Response": {"RequestId": "mock", "SendStatusSet": [
                {"SerialNo": f"2019:{i}", "PhoneNumber": n, "Fee": 1, "SessionContext": "", "Code": "Ok",
                 "Message": "send success", "IsoCode": "CN"} for i, n in enumerate(numbers)]}}
        else:
            answer = {"Response": {"RequestId": "mock", "Error": {"Code": "AuthFailure.SignatureFailure",
                                                                   "Message": "mock: bad signature"}}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main():
    cert, key, secret_key = sys.argv[1:4]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.secret_key = secret_key
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
