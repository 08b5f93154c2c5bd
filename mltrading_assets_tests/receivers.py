"""Real receivers for the alerts: an HTTP server standing in for a Slack incoming webhook or
any JSON webhook, and an SMTP server (aiosmtpd) that wants STARTTLS and a login."""

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class WebhookReceiver:
    """Collects the JSON bodies POSTed to it; ``fail_next`` answers that many with a 500."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"down")
                    return
                receiver.bodies.append(body)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def texts(self) -> list[str]:
        return [body["text"] for body in self.bodies]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MailReceiver:
    """An SMTP server on 127.0.0.1 that requires STARTTLS before a login (user/secret), or
    with ``plain``, a local relay that wants neither."""

    USER, PASSWORD = "alerts", "secret"

    def __init__(self, port: int, plain: bool = False) -> None:
        self.messages: list[str] = []
        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                receiver.messages.append(envelope.content.decode())
                return "250 OK"

        def authenticate(server, session, envelope, mechanism, data):
            good = isinstance(data, LoginPassword) and (
                data.login.decode(),
                data.password.decode(),
            ) == (self.USER, self.PASSWORD)
            return AuthResult(success=good)

        self.port = port
        secured = {
            "tls_context": context,
            "require_starttls": True,
            "authenticator": authenticate,
            "auth_require_tls": True,
            "auth_required": True,
        }
        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=port, **({} if plain else secured)
        )
        self.controller.start()

    def subjects(self) -> list[str]:
        return [
            line.removeprefix("Subject: ")
            for message in self.messages
            for line in message.splitlines()
            if line.startswith("Subject: ")
        ]

    def stop(self) -> None:
        self.controller.stop()
