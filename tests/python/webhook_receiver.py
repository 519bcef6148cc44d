"""A Standard Webhooks receiver for the relay test, built on the reference `standardwebhooks` package.

Usage: webhook_receiver.py <whsec_ secret>. Prints {"port": N} once listening on 127.0.0.1, then one JSON
line per request: {"verified": true, "id": ..., "payload": ...} (answered 204) or {"verified": false,
"error": ...} (answered 401).
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

WEBHOOK = Webhook(sys.argv[1])


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            payload = WEBHOOK.verify(body, dict(self.headers.items()))
            line = {"verified": True, "id": self.headers.get("webhook-id"), "payload": payload}
            self.send_response(204)
        except WebhookVerificationError as error:
            line = {"verified": False, "error": str(error)}
            self.send_response(401)
        self.end_headers()
        print(json.dumps(line), flush=True)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
server.serve_forever()
